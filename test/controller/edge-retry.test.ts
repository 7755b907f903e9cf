// A request that a tunnel refuses unprocessed (REFUSED_STREAM: the agent is draining) is retried on
// another tunnel and answered, also when it had no body and was read to its end before the refusal
// came back (the case a rolling restart of agent replicas hits).
import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { TargetPolicy } from '../../src/agent/policy.js';
import { DEFAULT_HTTP_OPTIONS } from '../../src/controller/config.js';
import { PublicEdge } from '../../src/controller/edge.js';
import { RouteTable } from '../../src/controller/routes.js';
import { TunnelRegistry } from '../../src/controller/tunnels.js';
import { createTargetPool, deliverStream } from '../../src/agent/deliver.js';
import { guardedLookup } from '../../src/proxy/target.js';
import { duplexPair } from '../helpers/duplex-pair.js';
import { listenOnLoopback } from '../helpers/listen.js';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { type SessionPair, sessionPair } from '../helpers/session-pair.js';
import { EVENT_MS, scaled } from '../helpers/wait.js';

let origin: Origin;
let server: Server;
let port: number;
const pairs: SessionPair[] = [];
const pool = createTargetPool();

before(async () => {
  origin = await startOrigin('main');
  const registry = new TunnelRegistry();
  // The first tunnel's agent takes no streams: it refuses each SYN with REFUSED_STREAM, as when draining.
  const refusing = await sessionPair(async () => {
    const { a, b } = duplexPair();
    return { client: a, server: b, close: async () => {} };
  });
  const serving = await sessionPair(async () => {
    const { a, b } = duplexPair();
    return { client: a, server: b, close: async () => {} };
  });
  const policy = new TargetPolicy(['127.0.0.1:*']);
  const logger = pino({ level: 'silent' });
  serving.client.on('stream', (stream) =>
    deliverStream(stream, {
      policy,
      pool,
      connectTimeoutMs: 5_000,
      lookup: guardedLookup((ip) => policy.forbidsAddress(ip)),
      wildcardLookup: guardedLookup((ip) => policy.forbidsWildcardAddress(ip)),
      logger,
    }),
  );
  pairs.push(refusing, serving);
  // Listed first, so that it wins the tie between two idle tunnels.
  registry.add({ session: refusing.server, cluster: 'c1', agent: 'draining', replica: 'r1', since: 0 });
  registry.add({ session: serving.server, cluster: 'c1', agent: 'live', replica: 'r2', since: 0 });
  const routes = new RouteTable([{ host: 'app.test', cluster: 'c1', target: origin.url }]);
  const edge = new PublicEdge({
    routes: () => routes,
    registry,
    http: DEFAULT_HTTP_OPTIONS,
    logger,
  });
  server = createServer(edge.onRequest);
  port = await listenOnLoopback(server);
});

after(async () => {
  server?.close();
  server?.closeAllConnections();
  for (const p of pairs) await p.close();
  pool.destroy();
  await origin?.close();
});

function send(method: string): Promise<{ status: number; origin: unknown; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request({
      host: '127.0.0.1',
      port,
      method,
      path: '/headers',
      headers: { host: 'app.test' },
      agent: false,
    });
    req.on('error', reject);
    req.setTimeout(scaled(EVENT_MS), () => req.destroy(new Error('no answer in time')));
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, origin: res.headers['x-origin'], text }));
    });
    req.end();
  });
}

test('a bodyless GET refused by the first tunnel is answered through the second', async () => {
  for (let i = 0; i < 5; i++) {
    const r = await send('GET');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.origin, 'main');
  }
});
