// Each cause a tunnel ends for has its own SLUICE_ERR_* code, in the controller's `tunnel-down` line
// and in sluice_errors_total, and the agent hears the cause where the wire can say it (docs/errors.md):
// a revoked token or deleted cluster (TOKEN_REVOKED; the agent gets GO_AWAY(FORBIDDEN) with the
// reason), a tunnel slot dialed again (TUNNEL_REPLACED), a failing token check (INTERNAL, both sides).
// An in-process controller on loopback port 0, real agents and raw tunnel clients over real TCP.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { type AgentHandle, startAgent } from '../../src/agent/agent.js';
import { loadAgentConfig } from '../../src/agent/config.js';
import { ADMIN_TOKEN_FILE } from '../../src/controller/control.js';
import { type ControllerHandle, startController } from '../../src/controller/controller.js';
import { slotCaps } from '../../src/tunnel/slot.js';
import { SluiceError } from '../../src/errors.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { StoreConflict } from '../../src/store/store.js';
import { dial } from '../../src/transport/index.js';
import { Session } from '../../src/tunnel/session.js';
import { inProcessControllerConfig } from '../helpers/controller-config.js';
import { transportPair } from '../helpers/transport-pair.js';
import { waitFor, within } from '../helpers/wait.js';

type Line = Record<string, unknown>;

/** A logger whose JSON lines land in `lines`. */
function capture(lines: Line[]) {
  return pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
}

const KEEP_TOKEN = 'keep-token-0123456789abcdef';
const DOOMED_TOKEN = 'doomed-token-0123456789abcdef';
const YAML = `clusters:
  - name: c1
    tokens: ["${KEEP_TOKEN}"]
  - name: doomed
    tokens: ["${DOOMED_TOKEN}"]
`;

let dir: string;
let controller: ControllerHandle;
let adminToken: string;
const controllerLines: Line[] = [];
const sessions: Session[] = [];
const agents: AgentHandle[] = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-codes-'));
  const config = inProcessControllerConfig(YAML, join(dir, 'data'));
  controller = await startController(config, capture(controllerLines), { announceAdminToken: () => {} });
  adminToken = readFileSync(join(dir, 'data', ADMIN_TOKEN_FILE), 'utf8').trim();
});

after(async () => {
  for (const agent of agents) await agent.close(0);
  for (const session of sessions) session.destroy();
  await controller?.close(0);
  rmSync(dir, { recursive: true, force: true });
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- JSON replies are probed field by field
async function api(method: string, path: string, body?: unknown): Promise<any> {
  const res = await fetch(`${controller.adminUrl}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${adminToken}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.ok(res.status < 300, `${method} ${path}: ${res.status}`);
  return res.json();
}

/** The value of one sample of `name` with label code=`code` at `url`/metrics, 0 when absent. */
async function errorsTotal(url: string, name: string, code: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{code="${code}"}`));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

/** A tunnel client as the agent dials one, with the slot caps the agent sends. */
async function rawTunnel(token: string, slot?: { index: number; generation: number }): Promise<Session> {
  const transport = await dial({ url: controller.tunnelUrl });
  const session = await Session.connect(transport, {
    hello: {
      token,
      agent: 'raw',
      replica: 'r1',
      ...(slot === undefined ? {} : { caps: slotCaps(slot) }),
    },
  });
  sessions.push(session);
  return session;
}

function closeError(session: Session): Promise<Error | undefined> {
  return once(session, 'close').then(([err]) => err as Error | undefined);
}

const down = (session: string) => (l: Line) => l.event === 'tunnel-down' && l.session === session;

describe('a revoked token', () => {
  test("closes its agent's tunnels with TOKEN_REVOKED; the agent hears FORBIDDEN and why", async () => {
    const created = await api('POST', '/api/clusters/c1/tokens');
    const agentLines: Line[] = [];
    const agent = await startAgent(
      loadAgentConfig({
        flags: {
          controller: controller.tunnelUrl,
          token: created.token,
          name: 'revokee',
          tunnels: '2',
          allow: ['127.0.0.1:1'],
          healthListen: '127.0.0.1:0',
        },
        env: {},
      }),
      capture(agentLines),
    );
    agents.push(agent);
    await within(agent.whenUp(), 10_000, 'the agent to connect');
    await waitFor('two tunnels up', () => agentLines.filter((l) => l.event === 'tunnel-up').length === 2);
    const before = await errorsTotal(controller.adminUrl!, 'sluice_errors_total', 'SLUICE_ERR_TOKEN_REVOKED');

    await api('DELETE', `/api/tokens/${created.id}`);

    const isDown = (l: Line) => l.event === 'tunnel-down' && l.agent === 'revokee';
    await waitFor('both controller tunnel-down lines', () => controllerLines.filter(isDown).length === 2);
    for (const line of controllerLines.filter(isDown)) {
      assert.equal(line.code, 'SLUICE_ERR_TOKEN_REVOKED');
      assert.match(String(line.err), new RegExp(`token ${created.id} was revoked`));
    }
    const after = await errorsTotal(controller.adminUrl!, 'sluice_errors_total', 'SLUICE_ERR_TOKEN_REVOKED');
    assert.equal(after - before, 2, 'one per tunnel in sluice_errors_total');

    const agentDown = (l: Line) => l.event === 'tunnel-down';
    await waitFor('both agent tunnel-down lines', () => agentLines.filter(agentDown).length === 2, 15_000);
    for (const line of agentLines.filter(agentDown)) {
      assert.equal(line.code, 'SLUICE_ERR_FORBIDDEN');
      assert.match(String(line.err), /FORBIDDEN \(token tok_\w+ was revoked\)/);
    }
    // Two tunnels closed as FORBIDDEN; a redial that the controller refused meanwhile (the revoked
    // token is refused for good) is a FORBIDDEN too, logged as tunnel-failed: counted, not mixed up.
    const refused = () =>
      agentLines.filter((l) => l.event === 'tunnel-failed' && l.code === 'SLUICE_ERR_FORBIDDEN').length;
    const refusedBefore = refused();
    const forbidden = await errorsTotal(
      agent.healthUrl!,
      'sluice_agent_errors_total',
      'SLUICE_ERR_FORBIDDEN',
    );
    const refusedAfter = refused();
    assert.ok(
      forbidden - 2 >= refusedBefore && forbidden - 2 <= refusedAfter,
      `FORBIDDEN counted ${forbidden} times: 2 tunnels and ${refusedBefore}..${refusedAfter} refused redials`,
    );
    const closed = await errorsTotal(
      agent.healthUrl!,
      'sluice_agent_errors_total',
      'SLUICE_ERR_SESSION_CLOSED',
    );
    assert.equal(closed, 0, 'nothing is reported as a bare SESSION_CLOSED');
  });

  test('deleting its cluster does the same, naming the cluster', async () => {
    const session = await rawTunnel(DOOMED_TOKEN);
    const ended = closeError(session);
    await api('DELETE', '/api/clusters/doomed');
    const err = await within(ended, 10_000, 'the tunnel to close');
    assert.ok(err instanceof SluiceError);
    assert.equal(err.code, 'SLUICE_ERR_FORBIDDEN');
    assert.match(err.message, /cluster doomed was deleted/);
    await waitFor('the tunnel-down line', () => controllerLines.some(down(session.id)));
    assert.equal(controllerLines.find(down(session.id))!.code, 'SLUICE_ERR_TOKEN_REVOKED');
  });
});

describe('a tunnel slot dialed again', () => {
  test('replaces the older generation with TUNNEL_REPLACED', async () => {
    const before = await errorsTotal(
      controller.adminUrl!,
      'sluice_errors_total',
      'SLUICE_ERR_TUNNEL_REPLACED',
    );
    const stale = await rawTunnel(KEEP_TOKEN, { index: 0, generation: 1 });
    await waitFor('the first tunnel up', () =>
      controllerLines.some((l) => l.event === 'tunnel-up' && l.session === stale.id),
    );
    const fresh = await rawTunnel(KEEP_TOKEN, { index: 0, generation: 2 });
    await waitFor('the stale tunnel down', () => controllerLines.some(down(stale.id)), 10_000);
    const line = controllerLines.find(down(stale.id))!;
    assert.equal(line.code, 'SLUICE_ERR_TUNNEL_REPLACED');
    assert.match(String(line.err), /replaced by generation 2/);
    const after = await errorsTotal(
      controller.adminUrl!,
      'sluice_errors_total',
      'SLUICE_ERR_TUNNEL_REPLACED',
    );
    assert.equal(after - before, 1);
    assert.equal(fresh.closed, false, 'the newer one stays');
  });
});

describe('a failing token check', () => {
  test('is SLUICE_ERR_INTERNAL on the server, and on the client through GO_AWAY(INTERNAL_ERROR)', async () => {
    const pair = await transportPair('tcp')();
    try {
      const server = Session.accept(pair.server, {
        authenticate: () => {
          throw new Error('token index unavailable');
        },
      });
      const client = Session.connect(pair.client, { hello: { token: 't', agent: 'a', replica: 'r' } });
      const [serverErr, clientErr] = await within(
        Promise.allSettled([server, client]),
        10_000,
        'both handshakes to fail',
      );
      assert.equal(serverErr.status, 'rejected');
      assert.equal(clientErr.status, 'rejected');
      const s = (serverErr as PromiseRejectedResult).reason as SluiceError;
      const c = (clientErr as PromiseRejectedResult).reason as SluiceError;
      assert.equal(s.code, 'SLUICE_ERR_INTERNAL');
      assert.match(s.message, /authenticate failed: token index unavailable/);
      assert.equal(c.code, 'SLUICE_ERR_INTERNAL');
      assert.match(c.message, /INTERNAL_ERROR \(authenticate failed: token index unavailable\)/);
    } finally {
      await pair.close();
    }
  });
});

describe('a store conflict', () => {
  test('is a SluiceError with SLUICE_ERR_STORE_CONFLICT and the field at fault', async () => {
    const store = openSqliteStore(join(dir, 'conflict'));
    try {
      await store.addCluster('twice');
      await assert.rejects(
        store.addCluster('twice'),
        (err: unknown) =>
          err instanceof StoreConflict &&
          err instanceof SluiceError &&
          err.code === 'SLUICE_ERR_STORE_CONFLICT' &&
          err.field === 'name',
      );
    } finally {
      await store.close();
    }
  });
});
