// The agent's redial schedule (DESIGN §4): full jitter under an exponential ceiling from about half a
// second to 30 s, never longer than the outage so far, and minutes after a refused token.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BACKOFF, backoffDelay, refusedDelay } from '../../src/agent/agent.js';

const top = (): number => 1 - Number.EPSILON;

test('the constants: 0.5 s first ceiling, 30 s cap, 30 s stable period, 5 min after a refusal', () => {
  assert.deepEqual(BACKOFF, { baseMs: 500, capMs: 30_000, stableMs: 30_000, refusedMs: 300_000 });
});

test('the ceiling doubles per attempt up to the cap', () => {
  const ceilings = Array.from({ length: 9 }, (_, attempt) => backoffDelay(attempt, Infinity, top));
  assert.deepEqual(ceilings, [500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]);
  assert.equal(backoffDelay(1_000, Infinity, top), 30_000, 'a huge attempt count stays at the cap');
});

test('full jitter: any wait from 0 to the ceiling', () => {
  assert.equal(
    backoffDelay(5, Infinity, () => 0),
    0,
  );
  assert.equal(
    backoffDelay(5, Infinity, () => 0.5),
    8_000,
  );
  for (let i = 0; i < 1_000; i++) {
    const d = backoffDelay(3, Infinity);
    assert.ok(d >= 0 && d <= 4_000, String(d));
  }
});

test('the ceiling is never longer than the outage has lasted, nor shorter than the base', () => {
  assert.equal(backoffDelay(10, 1_200, top), 1_200, 'a controller back after 1.2 s is redialed within 1.2 s');
  assert.equal(backoffDelay(10, 100, top), 500);
  assert.equal(backoffDelay(0, 60_000, top), 500, 'the exponential ceiling still applies');
});

test('after a refused token: between 2.5 and 5 minutes', () => {
  assert.equal(
    refusedDelay(() => 0),
    150_000,
  );
  assert.equal(refusedDelay(top), 300_000);
});
