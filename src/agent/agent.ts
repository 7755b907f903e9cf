// The agent process: holds N tunnels to the controller, each redialed with exponential backoff and full
// jitter, and serves every stream the controller opens by delivering it to its target (DESIGN §4).
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { Logger } from 'pino';
import { SluiceError } from '../errors.js';
import { createTargetPool, type DeliverContext, deliverStream } from '../proxy/deliver.js';
import { guardedLookup } from '../proxy/target.js';
import { dial } from '../transport/index.js';
import { Session } from '../tunnel/session.js';
import type { AgentConfig } from './config.js';
import { kubernetesApiFromEnv, TargetPolicy } from './policy.js';

export interface AgentHandle {
  /** Tunnels up right now. */
  readonly tunnelsUp: number;
  /** Resolves once the first tunnel is up (the agent can take traffic). */
  whenUp(): Promise<void>;
  /** http://host:port of the health listener, or null when it is off. */
  readonly healthUrl: string | null;
  /** Sends GO_AWAY on every tunnel, lets in-flight streams finish for up to `graceMs`, then stops. */
  close(graceMs?: number): Promise<void>;
}

/** Backoff between dials: full jitter over an exponential ceiling (DESIGN §4). */
export const BACKOFF = {
  baseMs: 250,
  capMs: 30_000,
  /** A tunnel that stayed up this long resets the backoff. */
  stableMs: 30_000,
  /** After a refused token: retrying cannot help until someone fixes it, so wait long. */
  refusedMs: 5 * 60_000,
} as const;

export async function startAgent(config: AgentConfig, logger: Logger): Promise<AgentHandle> {
  // Inside Kubernetes the API's ClusterIP is protected too, so `--allow '*:*'` cannot reach it.
  const policy = new TargetPolicy(config.allow, 'allow', {
    kubernetesApi: kubernetesApiFromEnv(process.env),
  });
  const pool = createTargetPool();
  const ctx: DeliverContext = {
    policy,
    pool,
    connectTimeoutMs: config.connectTimeoutMs,
    lookup: guardedLookup((ip) => policy.forbidsAddress(ip)),
    logger: logger.child({ component: 'deliver' }),
  };
  const ca = config.ca === undefined ? undefined : readFileSync(config.ca);
  const stopping = new AbortController();
  let markUp!: () => void;
  const firstUp = new Promise<void>((resolve) => (markUp = resolve));
  const slots = Array.from(
    { length: config.tunnels },
    (_, i) => new TunnelSlot(i, config, ca, ctx, logger, stopping.signal, markUp),
  );
  logger.info(
    { event: 'starting', controller: config.controller, tunnels: config.tunnels, allow: policy.patterns },
    'agent starting',
  );
  for (const slot of slots) slot.run();

  let health: Server | null = null;
  let healthUrl: string | null = null;
  if (config.healthListen !== null) {
    health = createHealthServer(slots);
    healthUrl = await new Promise<string>((resolve, reject) => {
      health!.once('error', reject);
      health!.listen(config.healthListen!.port, config.healthListen!.host, () => {
        const a = health!.address();
        const port = typeof a === 'object' && a !== null ? a.port : 0;
        resolve(`http://${config.healthListen!.host}:${port}`);
      });
    });
    logger.info({ event: 'listening', listener: 'health', url: healthUrl }, 'health listener ready');
  }

  let closing: Promise<void> | undefined;
  return {
    whenUp: () => firstUp,
    get tunnelsUp() {
      return slots.filter((s) => s.up).length;
    },
    healthUrl,
    close(graceMs = config.tunnel.gracePeriod) {
      closing ??= (async () => {
        logger.info({ event: 'stopping', graceMs }, 'agent stopping');
        stopping.abort();
        await Promise.allSettled(slots.map((s) => s.close(graceMs)));
        pool.destroy();
        if (health !== null) {
          health.closeAllConnections();
          await new Promise<void>((resolve) => health!.close(() => resolve()));
        }
        logger.info({ event: 'stopped' }, 'agent stopped');
      })();
      return closing;
    },
  };
}

/** One tunnel position: dials, serves, and redials when the tunnel ends, until the agent stops. */
class TunnelSlot {
  session: Session | null = null;
  #attempt = 0;
  #wake: (() => void) | null = null;

  constructor(
    readonly index: number,
    readonly config: AgentConfig,
    readonly ca: Buffer | undefined,
    readonly ctx: DeliverContext,
    readonly logger: Logger,
    readonly signal: AbortSignal,
    readonly onUp: () => void,
  ) {
    signal.addEventListener('abort', () => this.#wake?.(), { once: true });
  }

  get up(): boolean {
    return this.session !== null && !this.session.closed;
  }

  async run(): Promise<void> {
    const log = this.logger.child({ tunnel: this.index });
    while (!this.signal.aborted) {
      let delay: number;
      try {
        const session = await this.#connect();
        const upAt = Date.now();
        this.session = session;
        this.onUp();
        log.info(
          { event: 'tunnel-up', controller: this.config.controller, session: session.id },
          'tunnel up',
        );
        const err = await new Promise<Error | undefined>((resolve) => session.once('close', resolve));
        this.session = null;
        if (this.signal.aborted) {
          log.info({ event: 'tunnel-closed' }, 'tunnel closed');
          break;
        }
        if (Date.now() - upAt >= BACKOFF.stableMs) this.#attempt = 0;
        delay = this.#backoff();
        log.warn({ event: 'tunnel-down', err: err?.message, retryInMs: delay }, 'tunnel down');
      } catch (err) {
        if (this.signal.aborted) break;
        const code = err instanceof SluiceError ? err.code : (err as NodeJS.ErrnoException).code;
        const refused = code === 'SLUICE_ERR_UNAUTHORIZED' || code === 'SLUICE_ERR_FORBIDDEN';
        delay = refused ? jitter(BACKOFF.refusedMs / 2, BACKOFF.refusedMs) : this.#backoff();
        const fields = {
          event: 'tunnel-failed',
          code,
          err: (err as Error).message,
          retryInMs: delay,
        };
        if (refused) log.error(fields, 'controller refused the agent token');
        else log.warn(fields, 'tunnel dial failed');
      }
      await this.#sleep(delay);
    }
  }

  async #connect(): Promise<Session> {
    const { config } = this;
    const transport = await dial({
      url: config.controller,
      ca: this.ca,
      servername: config.servername,
      signal: this.signal,
    });
    return Session.connect(transport, {
      hello: { token: config.token, agent: config.name, replica: config.replica },
      options: config.tunnel,
      logger: this.logger.child({ tunnel: this.index }),
      onStream: (stream) => deliverStream(stream, this.ctx),
    });
  }

  #backoff(): number {
    const ceiling = Math.min(BACKOFF.capMs, BACKOFF.baseMs * 2 ** this.#attempt);
    this.#attempt = Math.min(this.#attempt + 1, 30);
    return jitter(0, ceiling);
  }

  #sleep(ms: number): Promise<void> {
    if (this.signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#wake = done;
    });
  }

  async close(graceMs: number): Promise<void> {
    await this.session?.close(graceMs);
  }
}

function jitter(min: number, max: number): number {
  return Math.round(min + Math.random() * (max - min));
}

function createHealthServer(slots: readonly TunnelSlot[]): Server {
  return createServer((req, res) => {
    const path = (req.url ?? '').split('?', 1)[0];
    const up = slots.filter((s) => s.up).length;
    if (path === '/healthz' || path === '/readyz') {
      // Ready means traffic can reach this agent: at least one tunnel is up.
      const ok = path === '/healthz' || up > 0;
      res.writeHead(ok ? 200 : 503, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
      res.end(JSON.stringify({ ok, tunnelsUp: up, tunnels: slots.length }));
      return;
    }
    res.writeHead(404, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ error: 'not found' }));
  });
}
