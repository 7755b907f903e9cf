// Property: whatever open metadata a controller sends, an in-process agent never crashes and answers
// every stream, either served or reset, and the session lives on. A metadata object the agent's check
// refuses is reset with PROTOCOL_ERROR; one it accepts is never refused by Node's HTTP client later
// (no PROTOCOL_ERROR), so the check and Node agree on what a request head may hold. The raw-peer
// cases in hostile-controller.test.ts pin the inputs found so far; this one looks for the next.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import pino from 'pino';
import { type AgentHandle, startAgent } from '../../src/agent/agent.js';
import { loadAgentConfig } from '../../src/agent/config.js';
import { ErrorCode } from '../../src/protocol/constants.js';
import { parseStreamMeta } from '../../src/proxy/meta.js';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { RawController } from '../helpers/raw-controller.js';

let origin: Origin;
let controller: RawController;
let agent: AgentHandle | undefined;

before(async () => {
  origin = await startOrigin('fuzz');
  controller = await RawController.start();
  const config = loadAgentConfig({
    flags: {
      controller: controller.url,
      token: 'fuzz-token-0123456789',
      name: 'fuzz',
      tunnels: '1',
      allow: [`127.0.0.1:${origin.port}`],
    },
    env: {},
  });
  agent = await startAgent(config, pino({ level: 'silent' }));
  await controller.tunnel();
});

after(async () => {
  await agent?.close(0);
  await controller?.close();
  await origin?.close();
});

// Strings from every corner: control bytes, CR LF, Latin-1, above U+00FF, lone surrogates.
const anyText = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 12 }),
  fc.string({ unit: 'binary-ascii', maxLength: 12 }),
  fc.constantFrom('', ' ', 'a\u0001b', 'a\r\nX: y', '\t', 'caf\u00e9', '\u20ac', '\ud800', '\u007f'),
);
/** Mostly `good`, sometimes `bad`: most streams get far enough to be served. */
function mostly<T, U>(good: fc.Arbitrary<T>, bad: fc.Arbitrary<U>, weight = 9): fc.Arbitrary<T | U> {
  return fc.oneof({ weight, arbitrary: good }, { weight: 1, arbitrary: bad });
}
const name = mostly(
  fc.constantFrom('Host', 'X-A', 'Accept', 'x_b', 'Trailer', "!#$%&'*+-.^_`|~"),
  anyText,
  4,
);
const value = mostly(fc.constantFrom('app.test', 'a\tb', 'v', '', 'caf\u00e9', '\u00ff'), anyText, 4);
const head = fc.record(
  {
    method: mostly(fc.constantFrom('GET', 'POST', 'DELETE', 'OPTIONS', 'PATCH'), anyText),
    path: mostly(
      fc.constantFrom('/headers', '/status?code=204', '*', '/'),
      fc.oneof(
        anyText.map((s) => `/${s}`),
        anyText,
      ),
    ),
    version: mostly(fc.constantFrom('1.0', '1.1', '2.0'), anyText),
    headers: mostly(
      fc.array(fc.tuple(name, value), { maxLength: 4 }).map((pairs) => ['Host', 'app.test', ...pairs.flat()]),
      fc.array(fc.oneof(anyText, fc.integer()), { maxLength: 5 }),
    ),
    chunked: fc.boolean(),
  },
  { requiredKeys: ['method', 'path', 'version', 'headers'] },
);
const meta = fc
  .record(
    {
      kind: mostly(fc.constantFrom('http', 'upgrade'), anyText),
      target: mostly(
        fc.constant('ORIGIN'),
        fc.oneof(
          fc.constantFrom('http://127.0.0.1:1', 'http://localhost', 'http://[::1]:80'),
          anyText,
          fc.integer(),
        ),
        6,
      ),
      client: mostly(fc.constant('203.0.113.9:5000'), anyText),
      requestId: mostly(fc.constant('fuzz'), anyText),
      head: mostly(head, fc.jsonValue({ maxDepth: 2 })),
      extra: fc.jsonValue({ maxDepth: 1 }),
    },
    { requiredKeys: ['kind', 'target', 'client', 'requestId', 'head'] },
  )
  .map((m) => {
    // An unknown key is one more way to be refused; keep it rare.
    if ('extra' in m && fc.hash(JSON.stringify(m)) % 8 !== 0) delete (m as { extra?: unknown }).extra;
    return m;
  });

test('random metadata never crashes the agent: every stream is served or reset, as the check says', async (t) => {
  let served = 0;
  let refused = 0;
  await fc.assert(
    fc.asyncProperty(meta, async (m) => {
      const sent = { ...m, target: m.target === 'ORIGIN' ? `http://127.0.0.1:${origin.port}` : m.target };
      const outcome = await controller.open(sent, Buffer.alloc(0), 20_000);
      const checked = parseStreamMeta(JSON.parse(JSON.stringify(sent)) as unknown);
      if (!checked.ok) {
        refused++;
        assert.deepEqual(
          [outcome.kind, outcome.kind === 'rst' && outcome.code],
          ['rst', ErrorCode.PROTOCOL_ERROR],
        );
        return;
      }
      if (outcome.kind === 'response') served++;
      else
        assert.notEqual(outcome.code, ErrorCode.PROTOCOL_ERROR, `accepted, then refused: ${outcome.reason}`);
    }),
    { numRuns: 400 },
  );
  t.diagnostic(`served ${served}, refused by the check ${refused}`);
  assert.ok(served > 20, `${served} streams were served`);
  assert.ok(refused > 20, `${refused} streams were refused`);
  // The session is the one the fuzzing started on, and it still serves.
  const peer = await controller.tunnel();
  assert.equal(peer.ended, false);
  assert.equal(agent!.tunnelsUp, 1);
});
