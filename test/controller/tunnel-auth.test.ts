// Tunnel admission on an in-process controller over real TCP: a revoked token is FORBIDDEN and an
// unknown one UNAUTHORIZED (docs/protocol.md §4), and a real agent waits minutes after either; a burst
// of wrong-token handshakes from one address is slowed and logged in a bounded number of lines, while
// an agent with the right token from the same address still gets in.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { pino } from 'pino';
import { startAgent } from '../../src/agent/agent.js';
import { loadAgentConfig } from '../../src/agent/config.js';
import { ADMIN_TOKEN_FILE } from '../../src/controller/control.js';
import { type ControllerHandle, startController } from '../../src/controller/controller.js';
import { HANDSHAKE_BRAKE } from '../../src/controller/handshake-brake.js';
import { SluiceError } from '../../src/errors.js';
import { dial } from '../../src/transport/index.js';
import { Session } from '../../src/tunnel/session.js';
import { inProcessControllerConfig } from '../helpers/controller-config.js';
import { within } from '../helpers/wait.js';

const silent = pino({ level: 'silent' });
const SEED_TOKEN = 'tunnel-auth-seed-token-0123456789';

type Line = Record<string, unknown> & { msg?: string; event?: string; component?: string };

/** A pino logger whose JSON lines are kept and can be awaited. */
class Captured {
  readonly lines: Line[] = [];
  #waiters: { match: (l: Line) => boolean; resolve: (l: Line) => void }[] = [];
  readonly logger = pino({ level: 'debug' }, { write: (raw: string) => this.#add(JSON.parse(raw) as Line) });

  #add(line: Line): void {
    this.lines.push(line);
    this.#waiters = this.#waiters.filter((w) => !(w.match(line) && (w.resolve(line), true)));
  }

  wait(what: string, match: (l: Line) => boolean, ms = 30_000): Promise<Line> {
    const seen = this.lines.find(match);
    if (seen !== undefined) return Promise.resolve(seen);
    return within(new Promise<Line>((resolve) => this.#waiters.push({ match, resolve })), ms, what);
  }
}

const dirs: string[] = [];
const stops: (() => Promise<void>)[] = [];
after(async () => {
  for (const stop of stops.reverse()) await stop().catch(() => {});
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

async function controllerWith(
  logger = silent,
): Promise<{ controller: ControllerHandle; adminToken: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-tunnel-auth-'));
  dirs.push(dir);
  const yaml = `clusters:\n  - name: seeded\n    tokens: ["${SEED_TOKEN}"]\n`;
  const controller = await startController(inProcessControllerConfig(yaml, join(dir, 'data')), logger, {
    announceAdminToken: () => {},
  });
  stops.push(() => controller.close(0));
  const adminToken = readFileSync(join(dir, 'data', ADMIN_TOKEN_FILE), 'utf8').trim();
  return { controller, adminToken };
}

async function api(
  c: ControllerHandle,
  token: string,
  method: string,
  path: string,
  body?: unknown,
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- JSON replies are probed field by field
): Promise<any> {
  const res = await fetch(`${c.adminUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return res.json();
}

/** One handshake; resolves with the refusal's code, or 'welcome' (and closes the session). */
async function handshake(url: string, token: string): Promise<string> {
  const transport = await dial({ url });
  try {
    const session = await Session.connect(transport, { hello: { token, agent: 'probe', replica: 'p' } });
    await session.close(0);
    return 'welcome';
  } catch (err) {
    transport.destroy();
    return err instanceof SluiceError ? err.code : String(err);
  }
}

function agentWith(url: string, token: string, logger = silent) {
  return startAgent(
    loadAgentConfig({
      flags: { controller: url, token, name: 'auth-test', tunnels: '1', allow: ['127.0.0.1:1'] },
      env: {},
    }),
    logger,
  );
}

describe('a revoked token and an unknown one', () => {
  test('revoked: FORBIDDEN; unknown, or of a deleted cluster: UNAUTHORIZED; the agent waits minutes', async () => {
    const log = new Captured();
    const { controller, adminToken } = await controllerWith(log.logger);
    await api(controller, adminToken, 'POST', '/api/clusters', { name: 'rev' });
    const created = await api(controller, adminToken, 'POST', '/api/clusters/rev/tokens');
    const token = String(created.token);
    assert.equal(await handshake(controller.tunnelUrl, token), 'welcome');

    const agentLog = new Captured();
    const agent = await agentWith(controller.tunnelUrl, token, agentLog.logger);
    stops.push(() => agent.close(0));
    await within(agent.whenUp(), 30_000, 'the agent to connect');
    await api(controller, adminToken, 'DELETE', `/api/tokens/${created.id}`);
    // Its tunnel is closed; it dials again and is refused as FORBIDDEN, then waits minutes, not seconds.
    const refused = await agentLog.wait('the agent to be refused', (l) => l.event === 'tunnel-failed');
    assert.equal(refused.code, 'SLUICE_ERR_FORBIDDEN');
    assert.equal(refused.level, 50);
    assert.ok(Number(refused.retryInMs) >= 150_000, `retries in ${String(refused.retryInMs)} ms`);
    await log.wait('the refusal', (l) => l.msg === 'tunnel refused: revoked token' && l.code === 'FORBIDDEN');

    assert.equal(await handshake(controller.tunnelUrl, token), 'SLUICE_ERR_FORBIDDEN');
    assert.equal(
      await handshake(controller.tunnelUrl, 'slu_never-issued-0123456789'),
      'SLUICE_ERR_UNAUTHORIZED',
    );
    assert.equal(await handshake(controller.tunnelUrl, SEED_TOKEN), 'welcome');
    // A deleted cluster takes its tokens along: the revoked one is unknown from then on.
    await api(controller, adminToken, 'DELETE', '/api/clusters/rev');
    assert.equal(await handshake(controller.tunnelUrl, token), 'SLUICE_ERR_UNAUTHORIZED');
    assert.equal(
      agentLog.lines.filter((l) => l.event === 'tunnel-failed').length,
      1,
      'the agent dialed once',
    );
  });
});

describe('a burst of wrong tokens from one address', () => {
  test('is slowed, logged in bounded lines, and the right token from the same address gets in', async () => {
    const log = new Captured();
    const { controller } = await controllerWith(log.logger);
    const attempts = 60;
    const started = Date.now();
    const results = await Promise.all(
      Array.from({ length: attempts }, (_, i) =>
        handshake(controller.tunnelUrl, `wrong-token-${i}-0123456789`),
      ),
    );
    const elapsed = Date.now() - started;
    const checked = results.filter((r) => r === 'SLUICE_ERR_UNAUTHORIZED').length;
    const shed = results.filter((r) => r === 'SLUICE_ERR_OVERLOAD').length;
    assert.equal(checked + shed, attempts, `every attempt was refused: ${JSON.stringify(results)}`);
    // The burst, then about one check per refill period (one more for rounding): generous, yet far
    // below the 60 that were tried.
    const allowed = HANDSHAKE_BRAKE.burst + Math.ceil(elapsed / HANDSHAKE_BRAKE.refillMs) + 1;
    assert.ok(checked <= allowed, `${checked} tokens checked in ${elapsed} ms; at most ${allowed} expected`);
    assert.ok(shed > 0);

    // What a user sees at the default level, info.
    const tunnelLines = log.lines.filter((l) => l.component === 'tunnel' && Number(l.level) >= 30);
    const refusals = tunnelLines.filter((l) => String(l.msg).startsWith('tunnel refused'));
    assert.ok(refusals.length <= HANDSHAKE_BRAKE.logFirst, `${refusals.length} refusal lines`);
    assert.ok(
      tunnelLines.length <= 2 * HANDSHAKE_BRAKE.logFirst + 1,
      `${tunnelLines.length} tunnel log lines: ${JSON.stringify([...new Set(tunnelLines.map((l) => l.msg))])}`,
    );

    // The agent with the right token, from the same address, right after: held or shed for a moment at
    // most, then in (shed is OVERLOAD, which it retries on its ordinary backoff).
    const agentLog = new Captured();
    const agent = await agentWith(controller.tunnelUrl, SEED_TOKEN, agentLog.logger);
    stops.push(() => agent.close(0));
    await within(agent.whenUp(), 30_000, 'the agent with the right token to connect');
    const refused = agentLog.lines.filter((l) => l.event === 'tunnel-failed');
    assert.ok(
      refused.every((l) => l.code === 'SLUICE_ERR_OVERLOAD' && l.level === 40),
      JSON.stringify(refused),
    );
  });
});
