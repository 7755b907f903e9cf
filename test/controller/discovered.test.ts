// The controller's side of route discovery (controller/discovered.ts) against raw agents: real tunnel
// sessions over TCP to an in-process controller, each sending route snapshots on control streams as
// docs/protocol.md §12 says, and hostile ones sending what no agent should: no JSON, too many bytes, a
// version from the future, a stream left mid-way. What the controller stores is read back through its
// admin API, as an operator would.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ADMIN_TOKEN_FILE } from '../../src/controller/control.js';
import { type ControllerHandle, startController } from '../../src/controller/controller.js';
import { hostAllowed } from '../../src/controller/discovered.js';
import { ErrorCode } from '../../src/protocol/constants.js';
import {
  CONTROL_ROUTES_META,
  decodeRoutesReply,
  type DiscoveredRoute,
  encodeRouteSnapshot,
  MAX_SNAPSHOT_BYTES,
  readMessage,
  type RoutesReply,
} from '../../src/protocol/route-snapshot.js';
import { dial } from '../../src/transport/index.js';
import { Session } from '../../src/tunnel/session.js';
import type { Stream } from '../../src/tunnel/stream.js';
import { inProcessControllerConfig } from '../helpers/controller-config.js';
import { captureLog, type CapturedLog } from '../helpers/log-capture.js';
import { waitFor, within } from '../helpers/wait.js';

const TOKEN_1 = 'discovered-test-token-c1-0123456789';
const TOKEN_2 = 'discovered-test-token-c2-0123456789';

function route(host: string, path = '/', object = 'shop/web'): DiscoveredRoute {
  return { host, path, target: 'http://web.shop.svc.cluster.local:8080', source: 'ingress', object };
}

test('hostAllowed: exact names, and `*.suffix` for every name under the suffix, never the suffix itself', () => {
  const patterns = ['*.shop.example.test', 'exact.example.test'];
  assert.equal(hostAllowed(patterns, 'a.shop.example.test'), true);
  assert.equal(hostAllowed(patterns, 'a.b.shop.example.test'), true);
  assert.equal(hostAllowed(patterns, '*.shop.example.test'), true);
  assert.equal(hostAllowed(patterns, '*.x.shop.example.test'), true);
  assert.equal(hostAllowed(patterns, 'shop.example.test'), false);
  assert.equal(hostAllowed(patterns, 'evilshop.example.test'), false);
  assert.equal(hostAllowed(patterns, '*.example.test'), false);
  assert.equal(hostAllowed(patterns, 'exact.example.test'), true);
  assert.equal(hostAllowed(patterns, 'a.exact.example.test'), false);
  assert.equal(hostAllowed([], 'a.shop.example.test'), false);
});

describe('control streams on a real controller', () => {
  let dir = '';
  let controller: ControllerHandle;
  let log: CapturedLog;
  let adminToken = '';
  const sessions: Session[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sluice-discovered-'));
    log = captureLog('debug');
    const yaml = [
      'clusters:',
      `  - name: c1\n    tokens: ["${TOKEN_1}"]\n    hosts: ["*.shop.example.test"]`,
      `  - name: c2\n    tokens: ["${TOKEN_2}"]\n    hosts: ["*.example.test"]`,
      '  - name: none\n    tokens: ["discovered-test-token-none-0123456789"]',
      'routes:',
      '  - host: config.shop.example.test\n    cluster: c1\n    target: http://127.0.0.1:9',
      'discovery:\n  address: 203.0.113.7',
    ].join('\n');
    controller = await startController(inProcessControllerConfig(yaml, join(dir, 'data')), log.logger, {
      announceAdminToken: () => {},
    });
    adminToken = readFileSync(join(dir, 'data', ADMIN_TOKEN_FILE), 'utf8').trim();
  });

  after(async () => {
    for (const s of sessions) s.destroy();
    await controller?.close(0);
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  async function agent(token: string): Promise<Session> {
    const transport = await dial({ url: controller.tunnelUrl });
    const session = await Session.connect(transport, { hello: { token, agent: 'raw', replica: 'r' } });
    sessions.push(session);
    return session;
  }

  /** Opens a control stream, sends `body` whole, and reads the reply (or the reset). */
  async function send(
    session: Session,
    body: string | Buffer,
    meta: object = CONTROL_ROUTES_META,
  ): Promise<RoutesReply> {
    const stream = session.open({ ...meta });
    stream.on('error', () => {});
    stream.end(body);
    const reply = await within(readMessage(stream, MAX_SNAPSHOT_BYTES), 30_000, 'the reply');
    const decoded = decodeRoutesReply(reply.toString('utf8'));
    assert.ok(decoded.ok, JSON.stringify(decoded));
    return decoded.reply;
  }

  async function stored(): Promise<{ host: string; path: string; cluster: string; source: string }[]> {
    const res = await fetch(`${controller.adminUrl}/api/routes`, {
      headers: { authorization: `Bearer ${adminToken}` },
    });
    const body = (await res.json()) as {
      routes: { host: string; path: string; cluster: string; source: string }[];
    };
    return body.routes.filter((r) => r.source === 'agent');
  }

  test('a snapshot is stored within the hosts the cluster may claim; the reply names the rest and the address', async () => {
    const s = await agent(TOKEN_1);
    const reply = await send(
      s,
      encodeRouteSnapshot([
        route('a.shop.example.test'),
        route('a.shop.example.test', '/api', 'shop/api'),
        route('config.shop.example.test', '/x', 'shop/cfg'),
        route('other.test', '/', 'shop/other'),
      ]),
    );
    assert.equal(reply.stored, 2);
    assert.equal(reply.address, '203.0.113.7');
    assert.deepEqual(
      reply.refused.map((r) => [r.host, r.object]),
      [
        ['other.test', 'ingress shop/other'],
        ['config.shop.example.test', 'ingress shop/cfg'],
      ],
    );
    assert.match(
      reply.refused[0]!.reason,
      /outside the hosts cluster c1 may claim \(\*\.shop\.example\.test\)/,
    );
    assert.match(reply.refused[1]!.reason, /already claimed by config route/);
    assert.deepEqual(
      (await stored()).map((r) => `${r.cluster} ${r.host}${r.path}`),
      ['c1 a.shop.example.test/', 'c1 a.shop.example.test/api'],
    );
    // The next snapshot replaces the set whole; refusals already logged are not logged again.
    const refusedLines = log.events('discovery-refused').length;
    const next = await send(
      s,
      encodeRouteSnapshot([route('b.shop.example.test'), route('other.test', '/', 'shop/other')]),
    );
    assert.equal(next.stored, 1);
    assert.deepEqual(
      (await stored()).map((r) => r.host),
      ['b.shop.example.test'],
    );
    assert.equal(log.events('discovery-refused').length, refusedLines);
  });

  test("another cluster may not take a host one cluster's agent holds; a cluster with no hosts claims none", async () => {
    const s2 = await agent(TOKEN_2);
    const reply = await send(
      s2,
      encodeRouteSnapshot([route('b.shop.example.test'), route('c2.example.test')]),
    );
    assert.equal(reply.stored, 1);
    assert.match(reply.refused[0]!.reason, /already claimed by cluster c1/);
    const none = await agent('discovered-test-token-none-0123456789');
    const refused = await send(none, encodeRouteSnapshot([route('n.shop.example.test')]));
    assert.equal(refused.stored, 0);
    assert.match(refused.refused[0]!.reason, /cluster none may claim no host/);
    await send(s2, encodeRouteSnapshot([]));
  });

  test('the second and the hundredth snapshot on one stream each: the last one stands', async () => {
    const s = await agent(TOKEN_1);
    for (let i = 1; i <= 100; i++) {
      const reply = await send(s, encodeRouteSnapshot([route(`n${i}.shop.example.test`)]));
      assert.equal(reply.stored, 1);
      if (i === 2)
        assert.deepEqual(
          (await stored()).map((r) => r.host),
          ['n2.shop.example.test'],
        );
    }
    assert.deepEqual(
      (await stored()).map((r) => r.host),
      ['n100.shop.example.test'],
    );
  });

  test('hostile snapshots: each is refused on its own stream, and the tunnel goes on', async () => {
    const s = await agent(TOKEN_1);
    const before = await stored();
    const resetOf = async (body: string | Buffer, meta: object = CONTROL_ROUTES_META): Promise<string> => {
      const stream = s.open({ ...meta });
      stream.on('error', () => {});
      stream.end(body);
      const err = await within(readMessage(stream, MAX_SNAPSHOT_BYTES), 30_000, 'the reset').then(
        () => assert.fail('a reply came'),
        (e: Error) => e,
      );
      return err.message;
    };
    assert.match(await resetOf('{not json'), /PROTOCOL_ERROR.*is not JSON/);
    assert.match(await resetOf('{"routes":[{"host":"a b"}]}'), /PROTOCOL_ERROR.*route 0: host/);
    assert.match(await resetOf(Buffer.alloc(MAX_SNAPSHOT_BYTES + 1, 0x20)), /FRAME_SIZE_ERROR/);
    assert.match(
      await resetOf('{"routes":[]}', { ...CONTROL_ROUTES_META, v: 2 }),
      /REFUSED_STREAM.*unsupported/,
    );
    assert.match(await resetOf('{"routes":[]}', { ...CONTROL_ROUTES_META, type: 'nope' }), /REFUSED_STREAM/);
    assert.match(await resetOf('x', { kind: 'http' }), /REFUSED_STREAM.*accepts no such stream/);
    // A snapshot left mid-way (the agent resets its stream) stores nothing.
    const failed = log.events('discovery-snapshot-failed').length;
    const cut: Stream = s.open({ ...CONTROL_ROUTES_META });
    cut.on('error', () => {});
    cut.write('{"routes":[');
    cut.reset();
    await waitFor('the cut logged', () => log.events('discovery-snapshot-failed').length > failed);
    assert.deepEqual(await stored(), before);
    // Still a tunnel that works.
    const reply = await send(s, encodeRouteSnapshot([route('after.shop.example.test')]));
    assert.equal(reply.stored, 1);
  });
});

// Two agent replicas of one cluster (docs/kubernetes.md, end of "How the routes reach the controller"):
// each has its own tunnel, with its own `replica` in the HELLO, and sends its own snapshot. They see the
// same objects, but one may see a change before the other: the last snapshot received stands, whole.
describe('two agent replicas of one cluster', () => {
  const GRACE_MS = 300;
  let dir = '';
  let controller: ControllerHandle;
  let log: CapturedLog;
  let adminToken = '';
  const sessions: Session[] = [];
  /** The target of every stream a replica was asked for, as the controller routed it. */
  const asked: string[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sluice-replicas-'));
    log = captureLog('debug');
    const yaml = [
      'clusters:',
      `  - name: c1\n    tokens: ["${TOKEN_1}"]\n    hosts: ["*.shop.example.test"]`,
      `discovery:\n  gracePeriod: ${GRACE_MS}ms`,
    ].join('\n');
    controller = await startController(inProcessControllerConfig(yaml, join(dir, 'data')), log.logger, {
      announceAdminToken: () => {},
    });
    adminToken = readFileSync(join(dir, 'data', ADMIN_TOKEN_FILE), 'utf8').trim();
  });

  after(async () => {
    for (const s of sessions) s.destroy();
    await controller?.close(0);
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  /** A replica's tunnel; a request routed to it is recorded and answered with TARGET_UNREACHABLE. */
  async function replica(name: string): Promise<Session> {
    const transport = await dial({ url: controller.tunnelUrl });
    const session = await Session.connect(transport, {
      hello: { token: TOKEN_1, agent: 'shop-agent', replica: name },
    });
    sessions.push(session);
    session.on('stream', (stream: Stream) => {
      asked.push(String(stream.meta.target));
      stream.on('error', () => {});
      stream.reset(ErrorCode.TARGET_UNREACHABLE, 'a replica in a test');
    });
    return session;
  }

  function at(host: string): DiscoveredRoute {
    return {
      host,
      path: '/',
      target: `http://${host.split('.')[0]}.shop.svc.cluster.local:80`,
      source: 'ingress',
      object: `shop/${host.split('.')[0]}`,
    };
  }

  async function send(session: Session, routes: DiscoveredRoute[]): Promise<RoutesReply> {
    const stream = session.open({ ...CONTROL_ROUTES_META });
    stream.on('error', () => {});
    stream.end(encodeRouteSnapshot(routes));
    const reply = await within(readMessage(stream, MAX_SNAPSHOT_BYTES), 30_000, 'the reply');
    const decoded = decodeRoutesReply(reply.toString('utf8'));
    assert.ok(decoded.ok, JSON.stringify(decoded));
    return decoded.reply;
  }

  async function stored(): Promise<string[]> {
    const res = await fetch(`${controller.adminUrl}/api/routes`, {
      headers: { authorization: `Bearer ${adminToken}` },
    });
    const body = (await res.json()) as { routes: { host: string; source: string; cluster: string }[] };
    return body.routes
      .filter((r) => r.source === 'agent')
      .map((r) => `${r.cluster} ${r.host}`)
      .sort();
  }

  /** What the public listener answers for `host`, and which target (if any) a replica was asked for. */
  async function served(host: string): Promise<{ status: number; target: string | undefined }> {
    const before = asked.length;
    const status = await within(
      new Promise<number>((resolve, reject) => {
        const req = httpRequest(controller.publicUrl, { headers: { host }, agent: false }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
        req.end();
      }),
      30_000,
      `the answer for ${host}`,
    );
    return { status, target: asked.slice(before)[0] };
  }

  /** The hosts of `hosts` that reach a replica (the others answer 404, no route). */
  async function routed(hosts: string[]): Promise<string[]> {
    const reached: string[] = [];
    for (const host of hosts) {
      const { status, target } = await served(host);
      if (status === 404) {
        assert.equal(target, undefined, host);
        continue;
      }
      assert.equal(status, 502, host);
      assert.equal(target, at(host).target, host);
      reached.push(host);
    }
    return reached;
  }

  const X = 'x.shop.example.test';
  const Y = 'y.shop.example.test';
  const Z = 'z.shop.example.test';

  test("B's newer snapshot replaces A's; A catching up changes nothing; B's next one stands again", async () => {
    const a = await replica('a');
    const b = await replica('b');
    assert.equal((await send(a, [at(X), at(Y)])).stored, 2);
    assert.deepEqual(await routed([X, Y, Z]), [X, Y]);
    // B's informer saw y deleted and z added before A's did.
    assert.equal((await send(b, [at(X), at(Z)])).stored, 2);
    assert.deepEqual(await stored(), [`c1 ${X}`, `c1 ${Z}`]);
    assert.deepEqual(await routed([X, Y, Z]), [X, Z]);
    // A's informer catches up: the same routes again.
    const again = await send(a, [at(X), at(Z)]);
    assert.deepEqual([again.stored, again.refused], [2, []]);
    assert.deepEqual(await routed([X, Y, Z]), [X, Z]);
    assert.equal((await send(b, [at(X)])).stored, 1);
    assert.deepEqual(await stored(), [`c1 ${X}`]);
    assert.deepEqual(await routed([X, Y, Z]), [X]);
    // A second hundred snapshots, alternating replicas: the last received stands each time.
    for (let i = 1; i <= 100; i++) {
      const host = `n${i}.shop.example.test`;
      assert.equal((await send(i % 2 === 0 ? a : b, [at(X), at(host)])).stored, 2);
    }
    assert.deepEqual(await stored(), [`c1 n100.shop.example.test`, `c1 ${X}`]);
    assert.deepEqual(await routed([X, 'n99.shop.example.test', 'n100.shop.example.test']), [
      X,
      'n100.shop.example.test',
    ]);
    await send(b, [at(X)]);
    a.destroy();
    b.destroy();
    await waitFor('both tunnels down', () => log.events('tunnel-down').some((l) => l.tunnels === 0));
  });

  test("a snapshot's refused host takes nothing from the other replica's routes", async () => {
    const a = await replica('a');
    const b = await replica('b');
    assert.equal((await send(a, [at(X), at(Y)])).stored, 2);
    const reply = await send(b, [at(X), at(Y), at('evil.other.test')]);
    assert.equal(reply.stored, 2);
    assert.deepEqual(
      reply.refused.map((r) => r.host),
      ['evil.other.test'],
    );
    assert.deepEqual(await stored(), [`c1 ${X}`, `c1 ${Y}`]);
    assert.deepEqual(await routed([X, Y, 'evil.other.test']), [X, Y]);
    // A, sending the same again, is told the same, and the refusal is logged once for the cluster.
    const same = await send(a, [at(X), at(Y), at('evil.other.test')]);
    assert.deepEqual([same.stored, same.refused.length], [2, 1]);
    assert.equal(log.events('discovery-refused').filter((l) => l.host === 'evil.other.test').length, 1);
    assert.deepEqual(await stored(), [`c1 ${X}`, `c1 ${Y}`]);
    // Still the last one stands: a snapshot whose every route is refused is a cluster with none.
    const none = await send(b, [at('evil.other.test')]);
    assert.deepEqual([none.stored, none.refused.length], [0, 1]);
    assert.deepEqual(await stored(), []);
    assert.deepEqual(await routed([X, Y]), []);
    a.destroy();
    b.destroy();
    await waitFor(
      'both tunnels down',
      () => log.events('tunnel-down').filter((l) => l.tunnels === 0).length >= 2,
    );
  });

  test("one replica's tunnel gone for good: the other holds the cluster and its routes; the last one's starts the grace period", async () => {
    const a = await replica('a');
    const b = await replica('b');
    assert.equal((await send(a, [at(X), at(Y)])).stored, 2);
    assert.equal((await send(b, [at(X), at(Y)])).stored, 2);
    const started = () => log.events('discovery-grace-started').filter((l) => l.cluster === 'c1').length;
    const startedBefore = started();
    const expiredBefore = log.events('discovery-expired').length;
    const downs = log.events('tunnel-down').length;
    a.destroy();
    await waitFor('A down on the controller', () =>
      log
        .events('tunnel-down')
        .slice(downs)
        .some((l) => l.replica === 'a'),
    );
    const downA = log
      .events('tunnel-down')
      .slice(downs)
      .find((l) => l.replica === 'a')!;
    assert.equal(downA.tunnels, 1);
    assert.equal(started(), startedBefore, 'no grace period while B holds the cluster');
    assert.deepEqual(await stored(), [`c1 ${X}`, `c1 ${Y}`]);
    assert.deepEqual(await routed([X, Y]), [X, Y]);
    // B alone keeps sending: its snapshots stand as before.
    assert.equal((await send(b, [at(X)])).stored, 1);
    assert.deepEqual(await routed([X, Y]), [X]);
    // B is the cluster's last tunnel: its going starts the grace period, and the routes go at its end.
    b.destroy();
    await waitFor('the grace period started', () => started() > startedBefore);
    await waitFor('the routes expired', () => log.events('discovery-expired').length > expiredBefore);
    assert.equal(started(), startedBefore + 1);
    assert.deepEqual(await stored(), []);
    assert.deepEqual(await routed([X]), []);
  });
});
