// TCP routes through a real tunnel session (controller and agent halves in one process, over a
// loopback TCP transport): the relay, the listener's limits, TcpRoutes add/remove, and redis-benchmark.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { deliverTcp } from '../../src/agent/deliver-tcp.js';
import { ClusterDispatcher } from '../../src/controller/dispatcher.js';
import { TcpRouteError, TcpRoutes } from '../../src/controller/tcp-listener.js';
import type { Tunnel } from '../../src/controller/tunnels.js';
import { parseTcpStreamMeta } from '../../src/proxy/meta.js';
import type { Stream } from '../../src/tunnel/stream.js';
import { listenOnLoopback } from '../helpers/listen.js';
import { RedisServer } from '../helpers/redis.js';
import { sessionPair, type SessionPair } from '../helpers/session-pair.js';
import { transportPair } from '../helpers/transport-pair.js';

const log = pino({ level: 'silent' });

describe('TCP routes', () => {
  let pair: SessionPair;
  let echo: Server;
  let echoPort = 0;
  let resetter: Server;
  let resetPort = 0;
  let redis: RedisServer | undefined;
  let routes: TcpRoutes;
  const done: string[] = [];

  before(async () => {
    pair = await sessionPair(transportPair('tcp'));
    pair.client.on('stream', (stream: Stream) => {
      const parsed = parseTcpStreamMeta(stream.meta);
      if (!parsed.ok) return stream.reset(1, parsed.reason);
      const url = new URL(parsed.meta.target);
      deliverTcp(
        stream,
        parsed.meta,
        { host: url.hostname, port: Number(url.port), lookup: undefined, connectTimeoutMs: 5000 },
        log,
      );
    });
    echo = createServer({ allowHalfOpen: true }, (s) => {
      s.pipe(s);
    });
    echoPort = await listenOnLoopback(echo);
    resetter = createServer((s) => {
      s.once('data', () => s.resetAndDestroy());
    });
    resetPort = await listenOnLoopback(resetter);
    const tunnel = {
      session: pair.server,
      cluster: 'shop',
      agent: 'a',
      replica: 'r1',
      since: Date.now(),
    } as unknown as Tunnel;
    const dispatcher = new ClusterDispatcher({
      pick: (cluster, exclude) => (cluster === 'shop' && !exclude.has(tunnel) ? tunnel : undefined),
      unavailableReason: () => 'no tunnel',
    });
    routes = new TcpRoutes({
      dispatcher,
      limits: { maxConnectionsPerClient: 150, maxConnectionsPerRoute: 200 },
      log,
      graceMs: 2000,
      observer: { done: (d) => done.push(d.outcome) },
    });
    redis = await RedisServer.start();
  });

  after(async () => {
    for (const r of routes?.list() ?? []) await routes.remove(r.address).catch(() => {});
    await redis?.stop?.();
    echo?.close();
    resetter?.close();
    await pair?.close();
  });

  it('echoes through the 2nd and 100th connection, with a half-close', async () => {
    const l = await routes.add({
      listen: '127.0.0.1:0',
      cluster: 'shop',
      target: `tcp://127.0.0.1:${echoPort}`,
    });
    for (let i = 1; i <= 100; i++) {
      const c = connect(l.port, '127.0.0.1');
      const payload = Buffer.alloc(i === 100 ? 1 << 20 : 100, i);
      c.end(payload);
      const chunks: Buffer[] = [];
      c.on('data', (d: Buffer) => chunks.push(d));
      await once(c, 'end');
      assert.deepEqual(Buffer.concat(chunks), payload, `connection ${i}`);
      c.destroy();
    }
  });

  it('passes a target reset on as a reset', async () => {
    const l = await routes.add({
      listen: '127.0.0.1:0',
      cluster: 'shop',
      target: `tcp://127.0.0.1:${resetPort}`,
    });
    const c = connect(l.port, '127.0.0.1');
    c.write('x');
    const [err] = (await once(c, 'error')) as [NodeJS.ErrnoException];
    assert.equal(err.code, 'ECONNRESET');
  });

  it('refuses a cluster with no tunnel as no_tunnel', async () => {
    const l = await routes.add({
      listen: '127.0.0.1:0',
      cluster: 'nope',
      target: `tcp://127.0.0.1:${echoPort}`,
    });
    const before = done.filter((d) => d === 'no_tunnel').length;
    const c = connect(l.port, '127.0.0.1');
    c.on('error', () => {});
    await new Promise((r) => c.once('close', r));
    for (let i = 0; i < 100 && done.filter((d) => d === 'no_tunnel').length === before; i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(done.filter((d) => d === 'no_tunnel').length, before + 1);
  });

  it('gives address_in_use for a port in use and keeps the others', async () => {
    const busy = createServer();
    const port = await listenOnLoopback(busy);
    try {
      await assert.rejects(
        routes.add({ listen: `127.0.0.1:${port}`, cluster: 'shop', target: `tcp://127.0.0.1:${echoPort}` }),
        (e: unknown) => e instanceof TcpRouteError && e.reason === 'address_in_use',
      );
      assert.ok(routes.list().length >= 1);
    } finally {
      busy.close();
    }
  });

  it('closes connections over the per-client limit at once', async () => {
    const l = await routes.add({
      listen: '127.0.0.1:0',
      cluster: 'shop',
      target: `tcp://127.0.0.1:${echoPort}`,
    });
    const held: Socket[] = [];
    for (let i = 0; i < 150; i++) {
      const c = connect(l.port, '127.0.0.1');
      c.write('a');
      await once(c, 'data');
      held.push(c);
    }
    const over = connect(l.port, '127.0.0.1');
    over.on('error', () => {});
    await new Promise((r) => over.once('close', r));
    assert.ok(done.includes('over_limit'));
    for (const c of held) c.destroy();
    await routes.remove(l.address);
    assert.equal(routes.get(l.address), undefined);
  });

  it('carries redis-benchmark -n 100000 -c 50 with no errors', async () => {
    const l = await routes.add({
      listen: '127.0.0.2:0',
      cluster: 'shop',
      target: `tcp://127.0.0.1:${redis!.port}`,
    });
    const child = spawn(
      'redis-benchmark',
      ['-h', '127.0.0.2', '-p', String(l.port), '-n', '100000', '-c', '50', '-t', 'set,get', '-q'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    const [code] = (await once(child, 'exit')) as [number];
    clearTimeout(timer);
    assert.equal(code, 0, out);
    assert.match(out, /SET: .*requests per second/);
    assert.match(out, /GET: .*requests per second/);
    assert.doesNotMatch(out, /error/i);
  });
});
