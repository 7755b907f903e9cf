// The agent process: holds N tunnels to the controller, each redialed on its own with exponential backoff
// and full jitter, and serves every stream the controller opens by delivering it to its target
// (DESIGN §4). Each dial of a tunnel slot carries the slot and a generation in HELLO, so the controller
// can replace a stale tunnel of the slot the moment its successor arrives. Given several controller
// URLs (a fleet), slot i starts on URL i mod n; when its tunnel ends or a dial fails it dials the next
// URL at once, and backs off only once every URL has failed in a row.
import type { Server } from 'node:http';
import { createSecureContext, rootCertificates, type SecureContext } from 'node:tls';
import type { Logger } from 'pino';
import { LiveSet } from '../collections.js';
import { readinessLogger } from '../logging.js';
import { readConfiguredFile } from '../config/startup.js';
import { ConfigError, SluiceError } from '../errors.js';
import { ErrorCode } from '../protocol/constants.js';
import { ALWAYS_READY, createOpsServer, listenHttp } from '../ops.js';
import { H2Sessions } from './deliver-h2.js';
import { createHttpsTargetPool, createTargetPool, type DeliverContext, deliverStream } from './deliver.js';
import { TargetPools } from './deliver-undici.js';
import { guardedLookup } from '../proxy/target.js';
import { UPGRADE_CLOSE_MS } from '../proxy/upgrade.js';
import { checkDialOptions, dial, watchHandshake } from '../transport/index.js';
import { checkCa } from '../transport/tls.js';
import { Session } from '../tunnel/session.js';
import { slotCaps } from '../tunnel/slot.js';
import type { Stream } from '../tunnel/stream.js';
import type { AgentConfig, DiscoveryConfig } from './config.js';
import type { Discovery } from './discovery.js';
import { AgentMetrics } from './metrics.js';
import { kubernetesApiFromEnv, TargetPolicy } from './policy.js';
import { RoutePublisher } from './route-publisher.js';
import { sluiceVersion } from '../version.js';
import { COMPACT_CAP, compactSynCodec } from '../proxy/compact.js';

export interface AgentHandle {
  /** Tunnels up right now (draining ones not counted). */
  readonly tunnelsUp: number;
  /** Resolves once the first tunnel is up (the agent can take traffic). */
  whenUp(): Promise<void>;
  /** http://host:port of the health listener, or null when it is off. */
  readonly healthUrl: string | null;
  /**
   * Route discovery, when `--discover` is on: its `routes` event carries each whole snapshot, after
   * the agent's policy has been widened by its targets. null when off.
   */
  readonly discovery: Discovery | null;
  /**
   * Sends GO_AWAY on every tunnel and lets in-flight requests finish for up to `graceMs`. Upgraded
   * connections get `config.upgradeGraceMs` of it (never more than `graceMs`): then they are closed with
   * a FIN each way, and reset if that close does not finish within UPGRADE_CLOSE_MS. Resolves as soon
   * as no stream is left, so that a long-lived WebSocket cannot hold the drain for the whole grace.
   */
  close(graceMs?: number): Promise<void>;
}

/** Backoff between dials: full jitter over an exponential ceiling (DESIGN §4). */
export const BACKOFF = {
  /** The first ceiling: a dropped tunnel is redialed within half a second. */
  baseMs: 500,
  capMs: 30_000,
  /** A tunnel that stayed up this long resets the backoff; a flapping one keeps backing off. */
  stableMs: 30_000,
  /** After a refused token: retrying cannot help until someone fixes it, so wait long. */
  refusedMs: 5 * 60_000,
} as const;

/**
 * The wait before the next dial: uniform in [0, ceiling], where the ceiling doubles with each failed
 * attempt from BACKOFF.baseMs up to BACKOFF.capMs. The ceiling is also never more than the outage has
 * lasted so far (`downForMs`), so a controller back after a one-second restart is redialed within about
 * a second, whatever the draws were; a long outage still backs off to the cap.
 */
export function backoffDelay(attempt: number, downForMs: number, random: () => number = Math.random): number {
  const exponential = BACKOFF.baseMs * 2 ** Math.min(attempt, 30);
  const ceiling = Math.min(BACKOFF.capMs, exponential, Math.max(BACKOFF.baseMs, downForMs));
  return Math.round(random() * ceiling);
}

/** The wait after the controller refused the token: between half of BACKOFF.refusedMs and all of it. */
export function refusedDelay(random: () => number = Math.random): number {
  return Math.round(BACKOFF.refusedMs * (0.5 + random() / 2));
}

export async function startAgent(config: AgentConfig, logger: Logger): Promise<AgentHandle> {
  // Inside Kubernetes the API's ClusterIP is protected too, so `--allow '*:*'` cannot reach it.
  const policy = new TargetPolicy(config.allow, 'allow', {
    kubernetesApi: kubernetesApiFromEnv(process.env),
  });
  const pool = createTargetPool(config.maxSocketsPerTarget);
  const targetTls = readTargetCa(config);
  const httpsPool = createHttpsTargetPool(config.maxSocketsPerTarget, targetTls);
  const pools = new TargetPools(config.maxSocketsPerTarget, targetTls);
  const h2 = new H2Sessions();
  // Its gauges read the slots only when scraped, once they exist.
  const metrics = new AgentMetrics(() => slots);
  const ctx: DeliverContext = {
    policy,
    pool,
    httpsPool,
    pools,
    targetTls,
    h2,
    connectTimeoutMs: config.connectTimeoutMs,
    lookup: guardedLookup((ip) => policy.forbidsAddress(ip)),
    wildcardLookup: guardedLookup((ip) => policy.forbidsWildcardAddress(ip)),
    logger: logger.child({ component: 'deliver' }),
    observer: metrics,
  };
  const ca = readCa(config);
  const stopping = new AbortController();
  const upgrades = new UpgradeStreams();
  let markUp!: () => void;
  const firstUp = new Promise<void>((resolve) => (markUp = resolve));
  // Set once discovery is prepared, which is before any slot dials.
  let publisher: RoutePublisher | null = null;
  const slots: TunnelSlot[] = Array.from(
    { length: config.tunnels },
    (_, i) =>
      new TunnelSlot(i, {
        config,
        ca,
        ctx,
        logger,
        signal: stopping.signal,
        onUp: markUp,
        onSession: (session) => publisher?.tunnelUp(session),
        upgrades,
        metrics,
      }),
  );
  logger.info(
    {
      event: 'starting',
      controllers: config.controllers,
      tunnels: config.tunnels,
      replica: config.replica,
      allow: policy.patterns,
    },
    'agent starting',
  );

  // Before anything listens: a kubeconfig that cannot be loaded stops the agent with nothing to undo.
  const discovery =
    config.discovery === null ? null : await prepareDiscovery(config.discovery, policy, logger);
  if (discovery !== null) {
    const routes = new RoutePublisher(discovery, () => slots.flatMap((s) => [...s.sessions]), logger);
    discovery.on('routes', () => routes.snapshot());
    publisher = routes;
    metrics.discovery = () => ({ claimedTwice: discovery.stats.conflicts, refused: routes.stats.refused });
  }
  let health: Server | null = null;
  let healthUrl: string | null = null;
  if (config.healthListen !== null) {
    health = createHealthServer(slots, pool, pools, metrics);
    healthUrl = await listenHttp(health, config.healthListen, 'healthListen');
    readinessLogger(logger).info(
      { event: 'listening', listener: 'health', url: healthUrl },
      'health listener ready',
    );
  }
  // Only now, so that a health listener that cannot bind leaves no tunnel dialing (nor watching).
  discovery?.start();
  for (const slot of slots) void slot.run();

  let closing: Promise<void> | undefined;
  return {
    whenUp: () => firstUp,
    get tunnelsUp() {
      return slots.filter((s) => s.up).length;
    },
    healthUrl,
    discovery,
    close(graceMs = config.tunnel.gracePeriod) {
      closing ??= (async () => {
        const sessions = slots.flatMap((s) => [...s.sessions]);
        const upgradeGraceMs = Math.min(config.upgradeGraceMs, graceMs);
        logger.info(
          { event: 'stopping', graceMs, upgradeGraceMs, tunnels: sessions.length, upgrades: upgrades.size },
          'agent stopping',
        );
        stopping.abort();
        discovery?.close();
        publisher?.close();
        // GO_AWAY now; each session closes by itself once its streams are done. Plain requests get the
        // whole grace period; the session resets what is left after it.
        const sessionGraceMs = Math.max(graceMs, upgradeGraceMs + UPGRADE_CLOSE_MS);
        const drained = Promise.allSettled(sessions.map((s) => s.close(sessionGraceMs)));
        let cutTimer: NodeJS.Timeout | undefined;
        const upgradeTimer = setTimeout(() => {
          const open = upgrades.closeAll();
          if (open === 0) return;
          logger.info(
            { event: 'grace-ended', upgrades: open, upgradeGraceMs },
            'upgrade grace ended; closing upgraded connections',
          );
          cutTimer = setTimeout(() => upgrades.resetAll(), UPGRADE_CLOSE_MS);
        }, upgradeGraceMs);
        await drained;
        clearTimeout(upgradeTimer);
        clearTimeout(cutTimer);
        pool.destroy();
        httpsPool.destroy();
        pools.destroy();
        h2.destroy();
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

/**
 * Route discovery (agent/discovery.ts), ready to start. Each snapshot widens the policy by its targets before
 * anyone else hears of it, so that a route is never served before its target may be dialed.
 */
async function prepareDiscovery(
  settings: DiscoveryConfig,
  policy: TargetPolicy,
  logger: Logger,
): Promise<Discovery> {
  // Loaded only when asked for: client-node takes about a second to import.
  const { Discovery: DiscoveryClass, loadKubeConfig } = await import('./discovery.js');
  let kubeConfig;
  try {
    kubeConfig = loadKubeConfig(settings.kubeconfig, process.env);
  } catch (err) {
    const where = settings.kubeconfig === undefined ? '' : `file ${JSON.stringify(settings.kubeconfig)} `;
    throw new ConfigError('kubeconfig', `${where}cannot be loaded: ${(err as Error).message}`, undefined, {
      cause: err,
    });
  }
  const discovery = new DiscoveryClass({ kubeConfig, namespace: settings.namespace, logger });
  discovery.on('routes', (routes) => {
    policy.setDiscovered(discovery.allowedTargets());
    logger.debug({ event: 'discovery-snapshot', routes }, 'route snapshot');
  });
  return discovery;
}

/**
 * The --target-ca file, read and checked once at startup, as a TLS context that trusts the system roots
 * and its certificates; undefined without one (Node's defaults are the system roots).
 */
function readTargetCa(config: AgentConfig): SecureContext | undefined {
  if (config.targetCa === undefined) return undefined;
  const pem = readConfiguredFile(
    'targetCa',
    config.targetCa,
    'SLUICE_ERR_TLS_CONFIG',
    '--target-ca, $SLUICE_TARGET_CA',
  );
  try {
    checkCa(pem);
    return createSecureContext({ ca: [...rootCertificates, pem.toString('utf8')] });
  } catch (err) {
    const reason = (err as Error).message.replace(/^ca /, '');
    const shown = JSON.stringify(config.targetCa);
    throw new ConfigError('targetCa', `file ${shown} ${reason}`, 'SLUICE_ERR_TLS_CONFIG', { cause: err });
  }
}

/** The --ca file, read and checked once at startup: a bad one would otherwise fail every dial. */
function readCa(config: AgentConfig): Buffer | undefined {
  if (config.ca === undefined) return undefined;
  const ca = readConfiguredFile('ca', config.ca, 'SLUICE_ERR_TLS_CONFIG', '--ca, $SLUICE_CA');
  try {
    for (const url of config.controllers) checkDialOptions({ url, ca });
  } catch (err) {
    if (!(err instanceof SluiceError) || err.code !== 'SLUICE_ERR_TLS_CONFIG') throw err;
    const reason = err.message.replace(/^ca /, '');
    throw new ConfigError('ca', `file ${JSON.stringify(config.ca)} ${reason}`, err.code, { cause: err });
  }
  return ca;
}

/** What every slot of one agent shares. */
interface SlotContext {
  config: AgentConfig;
  ca: Buffer | undefined;
  ctx: DeliverContext;
  logger: Logger;
  signal: AbortSignal;
  onUp: () => void;
  /** Each session that came up (the route publisher sends it the current snapshot). */
  onSession?: (session: Session) => void;
  upgrades: UpgradeStreams;
  metrics: AgentMetrics;
}

type SessionEnd = { goaway: true; reason: string } | { goaway: false; err: Error | undefined };

/**
 * One tunnel position: dials, serves, and redials when the tunnel ends, until the agent stops. Slots
 * never wait on each other: each has its own backoff.
 */
class TunnelSlot {
  /** The session that takes new streams, if any. */
  session: Session | null = null;
  /** Every open session of this slot: the current one, and any still draining after a GO_AWAY. */
  readonly sessions = new Set<Session>();
  #generation = 0;
  #attempt = 0;
  /** The controller URL this slot dials next: index into config.controllers. */
  #target: number;
  /** Dials failed in a row since a tunnel last came up; a full round of them means back off. */
  #failedInRow = 0;
  /** When this slot last had no usable tunnel, for the backoff's ceiling. */
  #downSince = Date.now();
  #wake: (() => void) | null = null;
  readonly #log: Logger;

  constructor(
    readonly index: number,
    readonly shared: SlotContext,
  ) {
    this.#log = shared.logger.child({ tunnel: index });
    this.#target = index % shared.config.controllers.length;
    shared.signal.addEventListener('abort', () => this.#wake?.(), { once: true });
  }

  get up(): boolean {
    return this.session !== null && !this.session.closed && !this.session.draining;
  }

  /** The URL the next dial goes to. */
  get controller(): string {
    return this.shared.config.controllers[this.#target]!;
  }

  /**
   * Moves to the next controller URL. With one URL it stays; with several, a tunnel that ended or a
   * dial that failed is retried on another controller at once (0 ms), and only a full round of
   * failures in a row takes the usual backoff.
   */
  #next(failed: boolean): { atOnce: boolean } {
    const n = this.shared.config.controllers.length;
    this.#target = (this.#target + 1) % n;
    if (!failed) this.#failedInRow = 0;
    else this.#failedInRow += 1;
    return { atOnce: n > 1 && this.#failedInRow < n };
  }

  async run(): Promise<void> {
    const { signal } = this.shared;
    const log = this.#log;
    while (!signal.aborted) {
      let delay: number;
      try {
        const session = await this.#connect();
        if (signal.aborted) {
          // The agent began stopping during the handshake: this tunnel never takes a stream.
          await session.close(0);
          break;
        }
        const upAt = Date.now();
        const from = this.controller;
        this.#adopt(session);
        this.#failedInRow = 0;
        const end = await sessionEnd(session);
        if (this.session === session) this.session = null;
        if (signal.aborted) break;
        if (Date.now() - upAt >= BACKOFF.stableMs) this.#attempt = 0;
        this.#downSince = Date.now();
        const { atOnce } = this.#next(!end.goaway);
        if (end.goaway) {
          // The controller is going away (a restart, a scale-down): its in-flight streams finish on the
          // old session while this slot dials a replacement, on the next controller when there are
          // several, else through the same URL, which a load balancer can send elsewhere.
          delay = atOnce ? 0 : Math.round(Math.random() * BACKOFF.baseMs);
          log.info(
            {
              event: 'tunnel-draining',
              controller: from,
              reason: end.reason,
              streams: session.streamCount,
              next: this.controller,
              retryInMs: delay,
            },
            'controller is draining the tunnel; dialing a replacement',
          );
        } else {
          delay = atOnce ? 0 : this.#backoff();
          const code = end.err instanceof SluiceError ? end.err.code : undefined;
          log.warn(
            {
              event: 'tunnel-down',
              controller: from,
              code,
              err: end.err?.message,
              upForMs: Date.now() - upAt,
              next: this.controller,
              retryInMs: delay,
            },
            'tunnel down',
          );
        }
      } catch (err) {
        if (signal.aborted) break;
        this.shared.metrics.tunnelError(err);
        const code = err instanceof SluiceError ? err.code : (err as NodeJS.ErrnoException).code;
        const refused = code === 'SLUICE_ERR_UNAUTHORIZED' || code === 'SLUICE_ERR_FORBIDDEN';
        const from = this.controller;
        // A fleet shares its tokens: one controller's refusal is every controller's.
        const { atOnce } = this.#next(true);
        delay = refused ? refusedDelay() : atOnce ? 0 : this.#backoff();
        const fields = {
          event: 'tunnel-failed',
          controller: from,
          code,
          err: (err as Error).message,
          next: this.controller,
          retryInMs: delay,
        };
        if (refused) log.error(fields, 'controller refused the agent token; fix the token or the cluster');
        else log.warn(fields, 'tunnel dial failed');
      }
      await this.#sleep(delay);
    }
  }

  async #connect(): Promise<Session> {
    const { config, ca, ctx, signal, upgrades } = this.shared;
    const url = this.controller;
    const transport = await dial({ url, ca, servername: config.servername, signal });
    this.#generation += 1;
    // A plain dial to a TLS listener fails with no word of TLS: the watch adds the hint.
    const handshake = watchHandshake(transport, url);
    const connecting = Session.connect(transport, {
      hello: {
        token: config.token,
        agent: config.name,
        replica: config.replica,
        caps: [...slotCaps({ index: this.index, generation: this.#generation }), COMPACT_CAP],
        version: sluiceVersion(),
      },
      options: config.tunnel,
      logger: this.#log,
      synCodec: compactSynCodec,
      onStream: (stream) => {
        upgrades.track(stream);
        try {
          deliverStream(stream, ctx);
        } catch (err) {
          // deliverStream never throws by design; if it ever does, the controller's input must still
          // end only this stream, never the agent and its other streams.
          this.#log.error({ err: (err as Error).message, stream: stream.id }, 'stream failed');
          if (!stream.destroyed) stream.reset(ErrorCode.INTERNAL_ERROR, 'the agent failed the stream');
        }
      },
    });
    return connecting.then(
      (session) => {
        handshake.done();
        return session;
      },
      (err: unknown) => {
        throw handshake.explain(err);
      },
    );
  }

  #adopt(session: Session): void {
    this.session = session;
    this.sessions.add(session);
    session.once('close', (err?: Error) => {
      this.sessions.delete(session);
      this.shared.metrics.tunnelError(err);
      // The current session's end is logged by run(); this is one left draining after a GO_AWAY.
      if (this.session !== session && !this.shared.signal.aborted) {
        this.#log.info(
          { event: 'tunnel-closed', session: session.id, err: err?.message },
          'old tunnel closed',
        );
      }
    });
    this.shared.onUp();
    this.shared.onSession?.(session);
    readinessLogger(this.#log).info(
      {
        event: 'tunnel-up',
        controller: this.controller,
        session: session.id,
        generation: this.#generation,
      },
      'tunnel up',
    );
  }

  #backoff(): number {
    const delay = backoffDelay(this.#attempt, Date.now() - this.#downSince);
    this.#attempt = Math.min(this.#attempt + 1, 30);
    return delay;
  }

  #sleep(ms: number): Promise<void> {
    if (this.shared.signal.aborted) return Promise.resolve();
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
}

/** Resolves when the controller sends GO_AWAY (the session drains on) or the session closes. */
function sessionEnd(session: Session): Promise<SessionEnd> {
  return new Promise((resolve) => {
    const onGoAway = (_code: number, reason: string): void => {
      session.off('close', onClose);
      resolve({ goaway: true, reason });
    };
    const onClose = (err?: Error): void => {
      session.off('goaway', onGoAway);
      resolve({ goaway: false, err });
    };
    session.once('goaway', onGoAway);
    session.once('close', onClose);
  });
}

/**
 * The upgraded streams this agent serves, so that a drain can close those still open when the grace
 * period ends. Plain HTTP streams are not kept: the sessions' own grace period cuts them.
 */
class UpgradeStreams {
  readonly #open = new LiveSet<Stream>('agent.upgrades');
  readonly #forget: (this: Stream) => void;

  constructor() {
    const open = this.#open;
    this.#forget = function (this: Stream) {
      open.delete(this);
    };
  }

  get size(): number {
    return this.#open.size;
  }

  track(stream: Stream): void {
    if (stream.meta.kind !== 'upgrade' && stream.meta.kind !== 'tcp') return;
    this.#open.add(stream);
    stream.once('close', this.#forget);
  }

  /**
   * Ends each open upgraded stream with a FIN: the controller ends its client's connection with a FIN
   * after the bytes already relayed, the client's FIN comes back and ends the target's connection the
   * same way. A raw relay cannot send a WebSocket close frame (it never parses the frames), so an
   * orderly TCP close is the proper close. One still waiting for its target's answer ends without
   * one, which the controller answers with a 502.
   */
  closeAll(): number {
    const n = this.#open.size;
    for (const stream of this.#open.list()) {
      if (stream.writableEnded) continue;
      stream.end();
    }
    return n;
  }

  /** Resets the upgraded streams whose orderly close did not finish in time. */
  resetAll(): void {
    for (const stream of this.#open.list()) {
      if (!stream.destroyed) stream.reset(ErrorCode.CANCEL, 'the agent is stopping');
    }
  }
}

function createHealthServer(
  slots: readonly TunnelSlot[],
  pool: { sockets: NodeJS.Dict<unknown[]>; freeSockets: NodeJS.Dict<unknown[]> },
  pools: TargetPools,
  metrics: AgentMetrics,
): Server {
  const up = (): number => slots.filter((s) => s.up).length;
  const count = (d: NodeJS.Dict<unknown[]>): number =>
    Object.values(d).reduce((n, list) => n + (list?.length ?? 0), 0);
  return createOpsServer({
    status: () => ({ tunnelsUp: up(), tunnels: slots.length }),
    // Ready means traffic can reach this agent: at least one tunnel is up.
    readiness: () => (up() > 0 ? ALWAYS_READY : { ready: false, reasons: ['no tunnel is up'] }),
    metrics: metrics.registry,
    memory: () => {
      const sessions = slots.flatMap((s) => [...s.sessions]);
      const undici = pools.counts();
      return {
        tunnelsUp: up(),
        sessions: sessions.length,
        streams: sessions.reduce((n, s) => n + s.streamCount, 0),
        targetSockets: count(pool.sockets) + undici.busy,
        targetFreeSockets: count(pool.freeSockets) + undici.free,
      };
    },
  });
}
