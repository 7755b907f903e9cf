// Peer forwarding between controllers of a fleet, in this process, on a real redis-server: two
// controllers that share presence, an agent on A only. B serves A's cluster over a peer session: a
// plain request, the second and the hundredth on one kept-alive connection, a streamed upload, and a
// WebSocket; the log line names the peer. A stream that comes from a peer never goes to another peer
// (no loop), a peer with the wrong fleet secret is refused with a clear line, and a request for a
// cluster no controller holds is 503 at once. The controllers share the Redis store, which also
// hands the second one the fleet secret the first generated.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { request, Agent } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type AgentHandle, startAgent } from '../../src/agent/agent.js';
import { loadAgentConfig } from '../../src/agent/config.js';
import { type ControllerHandle, startController } from '../../src/controller/controller.js';
import { loadControllerConfig } from '../../src/controller/config.js';
import { freePort } from '../helpers/listen.js';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { RedisServer } from '../helpers/redis.js';
import { ask } from '../helpers/sluice-procs.js';
import { startUpgradeOrigin, type UpgradeOrigin } from '../helpers/upgrade-origin.js';
import { wsConnect, wsEcho, wsOpened } from '../helpers/ws-client.js';
import { EVENT_MS, READY_MS, scaled, within } from '../helpers/wait.js';
import { type CapturedLog, captureLog } from '../helpers/log-capture.js';

const TOKEN = 'peer-test-token-0123456789abcdef';
const ADMIN = 'peer-test-admin-token-0123456789';

type Lines = Pick<CapturedLog, 'lines'>;
const capture = (): CapturedLog => captureLog();

let redis: RedisServer;
let origin: Origin;
let upgrades: UpgradeOrigin;
const root = mkdtempSync(join(tmpdir(), 'sluice-peers-'));
const controllers: ControllerHandle[] = [];
let agent: AgentHandle | undefined;

interface Started {
  handle: ControllerHandle;
  log: Lines;
  port: number;
}

async function controller(name: string, env: Record<string, string> = {}): Promise<Started> {
  const peerPort = await freePort();
  const yaml = [
    'clusters:',
    '  - name: c1',
    `    tokens: ["${TOKEN}"]`,
    '  - name: lonely',
    `    tokens: ["${TOKEN}-lonely"]`,
    'routes:',
    `  - { host: app.test, cluster: c1, target: "${origin.url}" }`,
    `  - { host: ws.test, cluster: c1, target: "${upgrades.url}" }`,
    `  - { host: lonely.test, cluster: lonely, target: "${origin.url}" }`,
  ].join('\n');
  const config = loadControllerConfig({
    flags: {
      config: 'sluice.yaml',
      listen: '127.0.0.1:0',
      tunnelListen: '127.0.0.1:0',
      adminListen: '127.0.0.1:0',
      data: join(root, name),
      store: redis.url,
      peerListen: `127.0.0.1:${peerPort}`,
      peerAdvertise: `tcp://127.0.0.1:${peerPort}`,
    },
    env: { SLUICE_ADMIN_TOKEN: ADMIN, ...env },
    readFile: () => yaml,
  });
  const log = capture();
  const handle = await startController(config, log.logger);
  controllers.push(handle);
  return { handle, log, port: Number(new URL(handle.publicUrl).port) };
}

async function fleetView(
  c: Started,
): Promise<{ instances: { id: string; clusters: Record<string, number> }[] }> {
  const url = new URL('/api/fleet', c.handle.adminUrl!);
  const res = await fetch(url, { headers: { authorization: `Bearer ${ADMIN}` } });
  return (await res.json()) as { instances: { id: string; clusters: Record<string, number> }[] };
}

/** Polls `check` every 20 ms until it holds, for at most `ms`. */
async function until(what: string, check: () => Promise<boolean>, ms = EVENT_MS): Promise<number> {
  const started = performance.now();
  const deadline = started + scaled(ms);
  for (let i = 0; i < 100_000 && performance.now() < deadline; i++) {
    if (await check()) return performance.now() - started;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`${what}: not within ${scaled(ms)} ms`);
}

let a: Started;
let b: Started;

before(async () => {
  redis = await RedisServer.start();
  origin = await startOrigin('peer-origin');
  upgrades = await startUpgradeOrigin();
  a = await controller('a');
  b = await controller('b');
  agent = await startAgent(
    loadAgentConfig({
      flags: {
        controller: a.handle.tunnelUrl,
        token: TOKEN,
        name: 'peer-agent',
        tunnels: '2',
        allow: [`127.0.0.1:${origin.port}`, `127.0.0.1:${new URL(upgrades.url).port}`],
      },
      env: {},
    }),
    captureLog('silent').logger,
  );
  await within(agent.whenUp(), READY_MS, 'the agent to connect to A');
  await until(
    'B to serve c1 through A',
    async () => (await ask({ port: b.port, host: 'app.test', path: '/status?code=200' })).status === 200,
    READY_MS,
  );
});

after(async () => {
  await agent?.close(0);
  await Promise.allSettled(controllers.map((c) => c.close(0)));
  await redis?.stop();
  await origin?.close();
  await upgrades?.close();
  rmSync(root, { recursive: true, force: true });
});

describe('peer forwarding', () => {
  test('B serves the first, second and hundredth request of one kept-alive connection through A', async () => {
    const keep = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const seen = new Set<string>();
      for (let i = 0; i < 100; i++) {
        const reply = await new Promise<{ status: number; body: string; socket: string }>(
          (resolve, reject) => {
            const req = request(
              {
                host: '127.0.0.1',
                port: b.port,
                path: `/echo?i=${i}`,
                headers: { host: 'app.test' },
                agent: keep,
              },
              (res) => {
                let body = '';
                res.setEncoding('utf8').on('data', (c: string) => (body += c));
                res.on('end', () =>
                  resolve({ status: res.statusCode!, body, socket: `${req.socket?.localPort}` }),
                );
              },
            );
            req.on('error', reject);
            req.end();
          },
        );
        assert.equal(reply.status, 200, reply.body);
        seen.add(reply.socket);
      }
      assert.equal(seen.size, 1, 'all 100 on one connection');
    } finally {
      keep.destroy();
    }
    const line = b.log.lines.find((l) => l.msg === 'request' && l.host === 'app.test' && l.status === 200);
    assert.ok(line !== undefined, 'B logged the request');
    assert.match(String(line.peer), /-[0-9a-f]{6}$/, 'the log line names the peer');
    assert.equal(line.agent, undefined, 'the agent is one hop further and not named');
    const onA = a.log.lines.find((l) => l.msg === 'request' && l.host === 'app.test');
    assert.equal(onA, undefined, 'A relays the stream, it does not serve it as a request of its own');
  });

  test('a 32 MiB upload through B reaches the origin whole', async () => {
    const body = randomBytes(32 * 1024 * 1024);
    const expected = createHash('sha256').update(body).digest('hex');
    const answer = await within(
      new Promise<string>((resolve, reject) => {
        const req = request(
          { host: '127.0.0.1', port: b.port, method: 'POST', path: '/hash', headers: { host: 'app.test' } },
          (res) => {
            let text = '';
            res.setEncoding('utf8').on('data', (c: string) => (text += c));
            res.on('end', () => resolve(text));
          },
        );
        req.on('error', reject);
        // Written in pieces, as a client streaming a file would.
        for (let off = 0; off < body.length; off += 1024 * 1024)
          req.write(body.subarray(off, off + 1024 * 1024));
        req.end();
      }),
      EVENT_MS,
      'the upload',
    );
    const parsed = JSON.parse(answer) as { bytes: number; sha256: string };
    assert.equal(parsed.bytes, body.length);
    assert.equal(parsed.sha256, expected);
  });

  test('a WebSocket through B echoes a 1 MiB message', async () => {
    const ws = wsConnect({ port: b.port, host: 'ws.test' }, '/echo');
    try {
      await wsOpened(ws);
      const message = randomBytes(1024 * 1024);
      const echoed = await wsEcho(ws, message);
      assert.ok(echoed.data.equals(message));
    } finally {
      ws.terminate();
    }
  });

  test('/api/fleet on B lists both controllers and which holds c1', async () => {
    const view = await fleetView(b);
    assert.equal(view.instances.length, 2);
    const holder = view.instances.find((i) => i.clusters.c1 === 2);
    assert.ok(holder !== undefined, JSON.stringify(view));
  });

  test('a cluster no controller holds is 503 at once, not after a wait', async () => {
    const started = performance.now();
    const reply = await ask({ port: b.port, host: 'lonely.test' });
    assert.equal(reply.status, 503);
    assert.ok(performance.now() - started < 2_000, 'no handoff wait for a cluster never seen');
  });

  test('a request waiting for a moving tunnel stops waiting when its client leaves', async () => {
    // A lonely agent comes and goes on A: for the next 5 s A expects lonely's tunnel to land again,
    // so a request for lonely.test waits for it instead of a 503 at once.
    const lonely = await startAgent(
      loadAgentConfig({
        flags: {
          controller: a.handle.tunnelUrl,
          token: `${TOKEN}-lonely`,
          name: 'lonely-agent',
          tunnels: '1',
          allow: `127.0.0.1:${origin.port}`,
        },
        env: {},
      }),
      captureLog('silent').logger,
    );
    await within(lonely.whenUp(), READY_MS, 'the lonely agent to connect to A');
    await lonely.close(0);
    const id = `leaver-${randomBytes(4).toString('hex')}`;
    const req = request({
      host: '127.0.0.1',
      port: a.port,
      path: '/status?code=200',
      headers: { host: 'lonely.test', 'x-request-id': id },
      agent: false,
    });
    req.on('error', () => {});
    req.end();
    // The request is in the wait (it has no answer yet); then the client leaves.
    await until('the request to be in flight', async () => {
      const memory = (await (await fetch(new URL('/debug/memory', a.handle.adminUrl!))).json()) as {
        inFlight: number;
      };
      return memory.inFlight > 0;
    });
    const left = performance.now();
    req.destroy();
    await until('the request to be logged', async () => a.log.lines.some((l) => l.requestId === id));
    const took = performance.now() - left;
    // The wait is 5 s; the request ends with its client, long before that.
    assert.ok(took < 3_000, `the request ended ${Math.round(took)} ms after its client left`);
  });

  test('a controller with the wrong fleet secret is refused with a clear line, and answers 503 fast', async () => {
    const wrong = await controller('wrong', { SLUICE_PEER_SECRET: 'not-the-fleet-secret' });
    await until('A to log the refusal', async () => a.log.lines.some((l) => l.event === 'peer-refused'));
    await until('the wrong one to log the refusal', async () =>
      wrong.log.lines.some((l) => l.event === 'peer-refused' && /SLUICE_PEER_SECRET/.test(String(l.msg))),
    );
    const started = performance.now();
    const reply = await ask({ port: wrong.port, host: 'app.test', path: '/status?code=200' });
    assert.equal(reply.status, 503);
    assert.ok(performance.now() - started < scaled(7_000), 'bounded by the handoff wait, never hanging');
    await wrong.handle.close(0);
  });
});
