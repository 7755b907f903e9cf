// The control plane follows the store's change events, whoever writes: a route written straight into
// the store (as another controller sharing it would) is served without going through the admin API, and
// a token revoked straight in the store closes the agent's tunnel at once. In-process controller and
// agent over real TCP, with a real origin behind the agent. And two controllers with different YAML on
// one SQLite file keep each other's config entries (docs/admin.md, seeding with a shared store).
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { type AgentHandle, startAgent } from '../../src/agent/agent.js';
import { loadAgentConfig } from '../../src/agent/config.js';
import { type ControllerHandle, startController } from '../../src/controller/controller.js';
import { SluiceError } from '../../src/errors.js';
import { hashToken } from '../../src/store/model.js';
import { openSqliteStore, type SqliteStore } from '../../src/store/sqlite.js';
import { inProcessControllerConfig } from '../helpers/controller-config.js';
import { dial } from '../../src/transport/index.js';
import { Session } from '../../src/tunnel/session.js';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { within } from '../helpers/wait.js';

const silent = pino({ level: 'silent' });
const TOKEN = 'store-events-token-0123456789abcdef';

let dir: string;
let origin: Origin;
let store: SqliteStore;
let controller: ControllerHandle | undefined;
let agent: AgentHandle | undefined;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-store-events-'));
  origin = await startOrigin('events');
  store = openSqliteStore(join(dir, 'data'));
  const yaml = `clusters:\n  - name: ev\n    tokens: ["${TOKEN}"]\n`;
  controller = await startController(inProcessControllerConfig(yaml, join(dir, 'data')), silent, {
    store,
    announceAdminToken: () => {},
  });
  agent = await startAgent(
    loadAgentConfig({
      flags: {
        controller: controller.tunnelUrl,
        token: TOKEN,
        name: 'events',
        tunnels: '1',
        allow: [`127.0.0.1:${origin.port}`],
      },
      env: {},
    }),
    silent,
  );
  await within(agent.whenUp(), 30_000, 'the agent to connect');
});

after(async () => {
  await agent?.close(0).catch(() => {});
  await controller?.close(0).catch(() => {});
  await origin?.close().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
});

/** GET `path` on the public listener with this Host; the status, or 0 when the connection failed. */
function get(host: string, path: string): Promise<number> {
  const { hostname, port } = new URL(controller!.publicUrl);
  return new Promise((resolve) => {
    const req = request({ host: hostname, port, path, headers: { host } }, (res) => {
      res.resume();
      res.once('end', () => resolve(res.statusCode ?? 0));
    });
    req.once('error', () => resolve(0));
    req.end();
  });
}

async function tunnelCount(): Promise<number> {
  const adminToken = readFileSync(join(dir, 'data', 'admin-token'), 'utf8').trim();
  const res = await fetch(`${controller!.adminUrl}/api/tunnels`, {
    headers: { authorization: `Bearer ${adminToken}` },
  });
  return ((await res.json()) as { tunnels: unknown[] }).tunnels.length;
}

test('a route written straight into the store is served, without the admin API', async () => {
  assert.equal(await get('direct.example.test', '/headers'), 404);
  await store.addRoute({ host: 'direct.example.test', path: '/', cluster: 'ev', target: origin.url });
  // A local store reports its write before the write resolves, and the table is rebuilt at once: the
  // very next request is routed. (A remote store's event comes later; nothing here waits for one.)
  assert.equal(await get('direct.example.test', '/headers'), 200);
  await store.removeRoute('direct.example.test', '/');
  assert.equal(await get('direct.example.test', '/headers'), 404);
});

test('a token revoked straight in the store closes its tunnel, and the agent stays out', async () => {
  assert.equal(await tunnelCount(), 1);
  const [record] = (await store.listTokens('ev')).filter((t) => t.hash === hashToken(TOKEN));
  await store.revokeToken(record!.id);
  // The session ends on its own turn of the event loop; polled, bounded for a busy machine.
  let up = await tunnelCount();
  for (const deadline = Date.now() + 30_000; up !== 0 && Date.now() < deadline; up = await tunnelCount()) {
    await delay(20);
  }
  assert.equal(up, 0, 'the tunnel of the revoked token is closed');
  // Known as revoked, too: refused as FORBIDDEN, not UNAUTHORIZED (docs/protocol.md §4).
  const transport = await dial({ url: controller!.tunnelUrl });
  const refusal = await Session.connect(transport, {
    hello: { token: TOKEN, agent: 'probe', replica: 'p' },
  }).then(
    async (session) => {
      await session.close(0);
      return 'welcome';
    },
    (err: unknown) => (transport.destroy(), err instanceof SluiceError ? err.code : String(err)),
  );
  assert.equal(refusal, 'SLUICE_ERR_FORBIDDEN');
});

test('two controllers with different YAML on one SQLite file keep each other’s entries', async () => {
  const shared = join(dir, 'shared');
  const start = (name: string): Promise<ControllerHandle> => {
    // Each its own data dir (admin token, seed source); the store is the one file.
    mkdirSync(join(dir, name), { recursive: true });
    return startController(
      inProcessControllerConfig(`clusters:\n  - name: ${name}\n    tokens: []\n`, join(dir, name)),
      silent,
      { store: openSqliteStore(shared), announceAdminToken: () => {} },
    );
  };
  const a = await start('from-a');
  let b: ControllerHandle | undefined;
  try {
    b = await start('from-b');
    // A restarts with its file: it claims its own entries again and deletes nothing of B's.
    await a.close(0);
    const again = await start('from-a');
    await again.close(0);
  } finally {
    await b?.close(0);
    await a.close(0);
  }
  const check = openSqliteStore(shared);
  const names = (await check.listClusters()).map((c) => c.name);
  await check.close();
  assert.deepEqual(names, ['from-a', 'from-b']);
});
