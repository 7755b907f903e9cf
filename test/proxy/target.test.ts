// Dialing targets from the agent: the guarded DNS lookup keeps only allowed addresses, and refuses a
// name whose every address is protected, with an error the stream reset maps to TARGET_DENIED.
import assert from 'node:assert/strict';
import type { LookupAddress } from 'node:dns';
import { test } from 'node:test';
import { ErrorCode } from '../../src/protocol/constants.js';
import { classify, guardedLookup } from '../../src/proxy/target.js';

function resolve(
  forbids: (ip: string) => boolean,
  name: string,
  all: boolean,
): Promise<{ err: NodeJS.ErrnoException | null; address: string | LookupAddress[] }> {
  return new Promise((done) => {
    guardedLookup(forbids)(name, { all }, (err, address) => done({ err, address }));
  });
}

test('a name resolving only to protected addresses is refused, both lookup forms', async () => {
  for (const all of [false, true]) {
    const { err } = await resolve((ip) => ip === '127.0.0.1' || ip === '::1', 'localhost', all);
    assert.ok(err !== null, `all=${all}`);
    assert.match(err.message, /localhost resolves to the protected address/);
    assert.equal(classify(err, 'http://localhost:80')[0], ErrorCode.TARGET_DENIED);
  }
});

test('allowed addresses pass through unchanged', async () => {
  const one = await resolve(() => false, 'localhost', false);
  assert.equal(one.err, null);
  assert.match(String(one.address), /^(127\.0\.0\.1|::1)$/);
  const many = await resolve((ip) => ip === '::1', 'localhost', true);
  assert.equal(many.err, null);
  assert.ok(Array.isArray(many.address));
  assert.ok(
    many.address.every((a) => a.address !== '::1'),
    'the protected one is filtered out',
  );
});

test('connect failures map to their RST codes', () => {
  const refused = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
  assert.deepEqual(classify(refused, 'http://x:1'), [
    ErrorCode.TARGET_UNREACHABLE,
    'http://x:1: ECONNREFUSED',
  ]);
  const reset = Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
  assert.equal(classify(reset, 'http://x:1')[0], ErrorCode.TARGET_UNREACHABLE);
});
