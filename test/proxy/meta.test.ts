// A stream's open metadata comes from across the tunnel: the agent accepts exactly the documented shape.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseStreamMeta } from '../../src/proxy/meta.js';

function valid(): Record<string, unknown> {
  return {
    kind: 'http',
    target: 'http://web.shop.svc.cluster.local:8080',
    client: '203.0.113.9:51234',
    requestId: 'abc',
    head: { method: 'POST', path: '/api?x=1', version: '1.1', headers: ['Host', 'a.test'], chunked: true },
  };
}

test('a well-formed metadata object is accepted as is', () => {
  const meta = valid();
  const result = parseStreamMeta(meta);
  assert.equal(result.ok, true);
  assert.equal(result.ok && result.meta, meta, 'no copy is made');
  const upgrade = {
    ...valid(),
    kind: 'upgrade',
    head: { method: 'GET', path: '*', version: '1.1', headers: [] },
  };
  assert.equal(parseStreamMeta(upgrade).ok, true);
});

test('each violation is refused with the key at fault', () => {
  const cases: [(m: Record<string, unknown>) => unknown, RegExp][] = [
    [() => null, /\(root\): is not an object/],
    [() => [], /\(root\)/],
    [(m) => ({ ...m, extra: 1 }), /extra: is not a metadata field/],
    [(m) => ({ ...m, kind: 'tcp' }), /kind: must be "http" or "upgrade"/],
    [(m) => ({ ...m, target: 5 }), /target/],
    [(m) => ({ ...m, target: 'x'.repeat(2049) }), /target/],
    [(m) => ({ ...m, client: undefined }), /client/],
    [(m) => ({ ...m, requestId: 'x'.repeat(201) }), /requestId/],
    [(m) => ({ ...m, head: 'GET /' }), /head: is not an object/],
    [(m) => ({ ...m, head: { ...(m.head as object), trailer: 1 } }), /head\.trailer: is not a head field/],
    [(m) => ({ ...m, head: { ...(m.head as object), method: 'GE T' } }), /head\.method/],
    [(m) => ({ ...m, head: { ...(m.head as object), path: 'http://x/' } }), /head\.path/],
    [(m) => ({ ...m, head: { ...(m.head as object), path: '/a b' } }), /head\.path/],
    [(m) => ({ ...m, head: { ...(m.head as object), path: '/a\r\nX: y' } }), /head\.path/],
    [(m) => ({ ...m, head: { ...(m.head as object), version: 1.1 } }), /head\.version/],
    [(m) => ({ ...m, head: { ...(m.head as object), headers: ['Host'] } }), /head\.headers/],
    [(m) => ({ ...m, head: { ...(m.head as object), headers: ['Host', 1] } }), /head\.headers/],
    [(m) => ({ ...m, head: { ...(m.head as object), chunked: 'yes' } }), /head\.chunked/],
  ];
  for (const [mutate, reason] of cases) {
    const result = parseStreamMeta(mutate(valid()));
    assert.equal(result.ok, false, String(reason));
    assert.match(!result.ok ? result.reason : '', reason);
  }
});
