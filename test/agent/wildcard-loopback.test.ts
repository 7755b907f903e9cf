// A name that only a wildcard allows must not take the agent to its own host. The policy tests pin the
// verdicts; these pin the dialing: the agent's real delivery path (tunnel session, http.request with
// the checking lookup, a real origin on 127.0.0.1) with only the DNS answers supplied by the test, and
// a real agent process whose `--allow '*:*'` meets a route to `localhost`. Before the fix the address
// check after DNS covered only cloud metadata and link-local addresses, so `*.internal` reached
// 127.0.0.1 through any name that resolved there.
import assert from 'node:assert/strict';
import type { LookupAddress } from 'node:dns';
import { connect, isIP } from 'node:net';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { TargetPolicy } from '../../src/agent/policy.js';
import { ErrorCode } from '../../src/protocol/constants.js';
import { createTargetPool, deliverStream } from '../../src/agent/deliver.js';
import { guardedLookup, type Resolver } from '../../src/proxy/target.js';
import { Session } from '../../src/tunnel/session.js';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { type Outcome, RawController } from '../helpers/raw-controller.js';
import { ask, Stack } from '../helpers/sluice-procs.js';

/** What the test's DNS answers: every local form a resolver (or /etc/hosts) could hand back. */
const ANSWERS: Record<string, string[]> = {
  'v4.internal': ['127.0.0.1'],
  'v4-other.internal': ['127.0.1.1'],
  'v6.internal': ['::1'],
  'mapped.internal': ['::ffff:127.0.0.1'],
  'mapped-hex.internal': ['::ffff:7f00:1'],
  'nat64.internal': ['64:ff9b::7f00:1'],
  'zero.internal': ['0.0.0.0'],
  'zero6.internal': ['::'],
  'both.internal': ['127.0.0.1', '::1'],
  'decimal.internal': ['2130706433'],
  'hex.internal': ['0x7f000001'],
  'short.internal': ['127.1'],
  'metadata.internal': ['169.254.169.254'],
  'exact.internal': ['127.0.0.1'],
};

const resolver: Resolver = (hostname, options, callback) => {
  const list = ANSWERS[hostname];
  if (list === undefined) {
    const err: NodeJS.ErrnoException = new Error(`getaddrinfo ENOTFOUND ${hostname}`);
    err.code = 'ENOTFOUND';
    return setImmediate(() => callback(err, '', 0));
  }
  const all: LookupAddress[] = list.map((address) => ({ address, family: isIP(address) === 6 ? 6 : 4 }));
  setImmediate(() => {
    if (options.all === true) callback(null, all);
    else callback(null, all[0]!.address, all[0]!.family);
  });
};

let origin: Origin;
let connections = 0;
let controller: RawController;
let session: Session | undefined;
const pool = createTargetPool();

before(async () => {
  origin = await startOrigin('loopback');
  origin.server.on('connection', () => connections++);
  controller = await RawController.start();
  const policy = new TargetPolicy(['*.internal:*', `exact.internal:${origin.port}`]);
  const socket = connect(Number(new URL(controller.url).port), '127.0.0.1');
  session = await Session.connect(socket, {
    hello: { token: 'test-token-0123456789', agent: 'a', replica: 'r' },
    onStream: (stream) =>
      deliverStream(stream, {
        policy,
        pool,
        connectTimeoutMs: 10_000,
        lookup: guardedLookup((ip) => policy.forbidsAddress(ip), resolver),
        wildcardLookup: guardedLookup((ip) => policy.forbidsWildcardAddress(ip), resolver),
        logger: pino({ level: 'silent' }),
      }),
  });
  await controller.tunnel();
});

after(async () => {
  session?.destroy();
  pool.destroy();
  await controller?.close();
  await origin?.close();
});

function meta(kind: 'http' | 'upgrade', name: string): Record<string, unknown> {
  return {
    kind,
    target: `http://${name}:${origin.port}`,
    client: '203.0.113.9:5000',
    requestId: `wl-${name}`,
    head: { method: 'GET', path: '/headers', version: '1.1', headers: ['Host', 'app.test'] },
  };
}

describe('a name allowed only by a wildcard, resolving to the local host', () => {
  for (const name of Object.keys(ANSWERS).filter((n) => n !== 'exact.internal')) {
    test(`${name} (${ANSWERS[name]!.join(', ')}) is refused with TARGET_DENIED and never dialed`, async () => {
      for (const kind of ['http', 'upgrade'] as const) {
        const before = connections;
        const outcome = await controller.open(meta(kind, name));
        assert.equal(outcome.kind, 'rst', `${kind}: ${JSON.stringify(outcome).slice(0, 200)}`);
        assert.equal((outcome as Extract<Outcome, { kind: 'rst' }>).code, ErrorCode.TARGET_DENIED, kind);
        assert.equal(connections, before, `${kind}: the origin saw no connection`);
      }
    });
  }

  test('the same answer for a name a pattern names exactly is dialed', async () => {
    const outcome = await controller.open(meta('http', 'exact.internal'));
    assert.equal(outcome.kind, 'response', JSON.stringify(outcome).slice(0, 200));
    assert.equal((outcome as Extract<Outcome, { kind: 'response' }>).status, 200);
  });
});

describe("a real agent process with --allow '*:*'", () => {
  let stack: Stack | undefined;
  after(async () => {
    await stack?.stop();
  });

  test('a route to localhost gets 502 and the agent never dials it', async () => {
    stack = await Stack.start({
      routes: [{ host: 'wild.test', target: `http://localhost:${origin.port}` }],
      allow: ['*:*'],
      tunnels: 1,
    });
    const before = connections;
    const reply = await ask({ port: stack.port, host: 'wild.test', path: '/headers' });
    assert.equal(reply.status, 502, reply.body.toString());
    const line = await stack.agent!.waitLine('the refusal', (l) => l.msg === 'target refused by policy');
    assert.match(String(line.reason), /is a loopback name; allow it explicitly with --allow localhost:/);
    assert.equal(connections, before, 'the origin saw no connection');
  });
});
