// The handshake brake on a fake clock: the burst, the holds, the shedding, successes that cost nothing,
// the refill, the bound on the address table, the log sampling and the address keys.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import {
  type BrakeReport,
  type BrakeSettings,
  HANDSHAKE_BRAKE,
  HandshakeBrake,
  keyOf,
} from '../../src/controller/handshake-brake.js';
import { within } from '../helpers/wait.js';

function brake(settings: Partial<BrakeSettings> = {}, reports: BrakeReport[] = []) {
  const clock = { now: 1_000_000 };
  const b = new HandshakeBrake(
    (r) => reports.push(r),
    { ...HANDSHAKE_BRAKE, ...settings },
    () => clock.now,
  );
  return { b, clock, reports };
}

/** One failed handshake, as the controller makes it: admitted, then failed. */
function fail(b: HandshakeBrake, address: string): number | 'shed' {
  const hold = b.admit(address);
  if (hold !== 'shed') b.failed(address, true);
  return hold;
}

describe('HandshakeBrake', () => {
  test('a burst passes at once; then handshakes are held one refill apart, up to the hold bound; then shed', () => {
    const { b } = brake();
    const holds = Array.from({ length: 20 }, () => fail(b, '198.51.100.7'));
    b.close();
    const burst = HANDSHAKE_BRAKE.burst;
    assert.deepEqual(holds.slice(0, burst), Array(burst).fill(0));
    const held = HANDSHAKE_BRAKE.maxHoldMs / HANDSHAKE_BRAKE.refillMs;
    assert.deepEqual(
      holds.slice(burst, burst + held),
      Array.from({ length: held }, (_, i) => (i + 1) * HANDSHAKE_BRAKE.refillMs),
    );
    assert.ok(holds.slice(burst + held).every((h) => h === 'shed'));
  });

  test('other addresses are not slowed by one that fails', () => {
    const { b } = brake();
    for (let i = 0; i < 50; i++) fail(b, '198.51.100.7');
    assert.equal(b.admit('198.51.100.8'), 0);
    b.close();
  });

  test('valid tokens cost nothing: a thousand in a row are never held', () => {
    const { b } = brake();
    for (let i = 0; i < 1000; i++) {
      assert.equal(b.admit('10.0.0.1'), 0);
      b.succeeded('10.0.0.1');
    }
    b.close();
  });

  test('the bucket refills: after the failures stop, a handshake is checked at once again', () => {
    const { b, clock } = brake();
    for (let i = 0; i < 50; i++) fail(b, '198.51.100.7');
    assert.equal(b.admit('198.51.100.7'), 'shed');
    clock.now += HANDSHAKE_BRAKE.maxHoldMs + HANDSHAKE_BRAKE.refillMs;
    assert.equal(b.admit('198.51.100.7'), 0);
    b.close();
  });

  test('a failure before the token check (a timeout, a bad HELLO) costs a token too', () => {
    const { b } = brake();
    for (let i = 0; i < HANDSHAKE_BRAKE.burst; i++) b.failed('198.51.100.9', false);
    assert.ok(b.admit('198.51.100.9') !== 0);
    b.close();
  });

  test('the address table is bounded', () => {
    const { b } = brake({ maxAddresses: 100 });
    for (let i = 0; i < 5000; i++) fail(b, `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
    assert.ok(b.size <= 100, `${b.size} entries`);
    b.close();
  });

  test('logs the first failures of an interval one by one, then one report with the count', async () => {
    const reports: BrakeReport[] = [];
    let reported: () => void = () => {};
    const seen = new Promise<void>((resolve) => (reported = resolve));
    const b = new HandshakeBrake(
      (r) => {
        reports.push(r);
        reported();
      },
      { ...HANDSHAKE_BRAKE, logIntervalMs: 50 },
    );
    try {
      const logged: boolean[] = [];
      for (let i = 0; i < 30; i++) {
        const hold = b.admit('203.0.113.5');
        if (hold !== 'shed') logged.push(b.failed('203.0.113.5', true));
      }
      assert.deepEqual(logged.slice(0, HANDSHAKE_BRAKE.logFirst), Array(HANDSHAKE_BRAKE.logFirst).fill(true));
      assert.ok(logged.slice(HANDSHAKE_BRAKE.logFirst).every((l) => !l));
      await within(seen, 30_000, 'the interval report');
      assert.equal(reports.length, 1);
      assert.equal(reports[0]!.address, '203.0.113.5');
      assert.equal(reports[0]!.failures, 30 - HANDSHAKE_BRAKE.logFirst);
      assert.equal(
        reports[0]!.shed,
        30 - HANDSHAKE_BRAKE.burst - HANDSHAKE_BRAKE.maxHoldMs / HANDSHAKE_BRAKE.refillMs,
      );
    } finally {
      b.close();
    }
  });
});

test('keyOf: IPv4 as it is, IPv4-mapped IPv6 as IPv4, IPv6 by its /64', () => {
  assert.equal(keyOf('127.0.0.1'), '127.0.0.1');
  assert.equal(keyOf('::ffff:127.0.0.1'), '127.0.0.1');
  assert.equal(keyOf('::1'), '0:0:0:0::/64');
  assert.equal(keyOf('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
  assert.equal(keyOf('2001:db8:1:2::ffff'), keyOf('2001:0db8:0001:0002:1:2:3:4'));
  assert.equal(keyOf('2001:db8::'), '2001:db8:0:0::/64');
});

test('docs/protocol.md §4 states the brake as HANDSHAKE_BRAKE sets it', () => {
  const spec = readFileSync(new URL('../../../docs/protocol.md', import.meta.url), 'utf8').replace(
    /\s+/g,
    ' ',
  );
  const b = HANDSHAKE_BRAKE;
  assert.equal(b.refillMs, 1000);
  assert.equal(b.logIntervalMs, 60_000);
  for (const phrase of [
    `${b.burst} may come at once, then one more per second`,
    `held more than ${b.maxHoldMs / 1000} s is answered \`OVERLOAD\``,
    `per address and minute, the first ${b.logFirst} are logged`,
    `At most ${b.maxAddresses.toLocaleString('en-US')} addresses are tracked`,
  ]) {
    assert.ok(spec.includes(phrase), phrase);
  }
});
