// One controller's part in a fleet (docs/fleet.md), composed: its presence entry in Redis, the peer
// listener other controllers dial, the sessions it keeps to them, and the tunnel source that lets the
// dispatcher use a peer's tunnels when this controller has none of a cluster's. Built only with a
// Redis store; a lone controller (SQLite) has none of it.
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { bindFailure } from '../config/startup.js';
import { readinessLogger } from '../logging.js';
import { connectRedis } from '../store/redis-client.js';
import type { Store } from '../store/store.js';
import { listen, type TunnelListener } from '../transport/index.js';
import type { ControllerConfig, PeerConfig } from './config.js';
import type { ControllerMetrics } from './metrics.js';
import { FleetSource, PeerAcceptor, PeerPool } from './peers.js';
import { Presence, type PresenceRecord } from './presence.js';
import { readTunnelTls } from './startup-files.js';
import type { TunnelRegistry } from './tunnels.js';

/** The shared setting (Store.claim) that holds the fleet secret when SLUICE_PEER_SECRET is unset. */
const SECRET_SETTING = 'peer-secret';
/** How long startup waits for Redis to answer the first presence round. */
const STARTUP_MS = 10_000;

/** One instance as /api/fleet lists it. */
export interface FleetInstance {
  readonly id: string;
  readonly advertise: string;
  readonly since: string;
  readonly draining: boolean;
  /** True for the controller answering. */
  readonly self: boolean;
  readonly clusters: Readonly<Record<string, number>>;
  /** Sessions this controller has up to it (absent for itself). */
  readonly sessions?: number;
}

export class Fleet {
  readonly id: string;
  readonly source: FleetSource;
  readonly #redis: Redis;
  readonly #presence: Presence;
  readonly #pool: PeerPool;
  readonly #acceptor: PeerAcceptor;
  readonly #listener: TunnelListener;

  static async start(
    config: ControllerConfig & { peer: PeerConfig },
    settings: Pick<Store, 'claim'>,
    registry: TunnelRegistry,
    metrics: ControllerMetrics,
    logger: Logger,
  ): Promise<Fleet> {
    const { store, peer } = config;
    if (store.kind === 'sqlite') throw new Error('a fleet needs a Redis store');
    const id = `${hostname()}-${randomBytes(3).toString('hex')}`;
    const log = logger.child({ component: 'fleet' });
    const redis = connectRedis(store, { name: `sluice:${id}:fleet` });
    redis.on('error', () => {});
    let listener: TunnelListener | undefined;
    try {
      // The first controller to start generates the secret; every other gets it back from the claim.
      const secret =
        peer.secret ?? (await settings.claim(SECRET_SETTING, randomBytes(32).toString('base64url')));
      let wake = (): void => {};
      const pool = new PeerPool({
        selfId: id,
        secret,
        session: config.tunnel,
        log: log.child({ component: 'peer' }),
        onChange: () => wake(),
      });
      const source = new FleetSource(registry, pool);
      wake = () => source.changed();
      const acceptor = new PeerAcceptor({
        selfId: id,
        secret,
        session: config.tunnel,
        registry,
        onReceived: metrics.peerStreamReceived,
        log: log.child({ component: 'peer' }),
      });
      const tls = /^(tls|wss):/.test(peer.listen) ? readTunnelTls(config) : {};
      listener = await listen(
        {
          url: peer.listen,
          ...tls,
          onError: (err) => log.error({ err: err.message }, 'peer listener error'),
        },
        (transport, info) => acceptor.accept(transport, `${info.remoteAddress}:${info.remotePort}`),
      ).catch((err: unknown) => {
        throw bindFailure('peerListen', peer.listen, err);
      });
      const presence = new Presence({
        redis,
        self: { id, advertise: peer.advertise, since: new Date().toISOString() },
        clusters: () => source.presenceCounts(),
        onChange: (view) => {
          pool.update(view);
          source.changed();
        },
        log,
      });
      registry.onChange(() => presence.refresh());
      const fleet = new Fleet(id, source, redis, presence, pool, acceptor, listener);
      await fleet.#loaded();
      readinessLogger(logger).info(
        { event: 'listening', listener: 'peer', url: listener.url, instance: id, advertise: peer.advertise },
        'peer listener ready',
      );
      return fleet;
    } catch (err) {
      await listener?.close();
      redis.disconnect();
      throw err;
    }
  }

  private constructor(
    id: string,
    source: FleetSource,
    redis: Redis,
    presence: Presence,
    pool: PeerPool,
    acceptor: PeerAcceptor,
    listener: TunnelListener,
  ) {
    this.id = id;
    this.source = source;
    this.#redis = redis;
    this.#presence = presence;
    this.#pool = pool;
    this.#acceptor = acceptor;
    this.#listener = listener;
  }

  /** Resolves once the first presence round read the view; rejects when Redis did not answer in time. */
  async #loaded(): Promise<void> {
    const deadline = Date.now() + STARTUP_MS;
    while (!this.#presence.loaded) {
      if (Date.now() > deadline) {
        await this.close();
        throw new Error(
          `the fleet's Redis did not answer within ${STARTUP_MS} ms: ${this.#presence.problem}`,
        );
      }
      this.#presence.refresh();
      await this.#presence.settled();
      if (!this.#presence.loaded) await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Why the fleet view may be stale, or undefined when Redis answers. */
  get problem(): string | undefined {
    return this.#presence.problem;
  }

  /** Streams from peers being relayed here now: the drain waits for them like for requests. */
  get relaying(): PeerAcceptor {
    return this.#acceptor;
  }

  /** Every controller of the fleet as this one sees it, itself first. */
  instances(): FleetInstance[] {
    const self = this.#presence.record();
    const sessions = new Map(this.#pool.links().map((l) => [l.id, l.sessions]));
    const others = [...this.#presence.peers.values()].sort((a, b) => a.id.localeCompare(b.id));
    return [
      { ...shown(self), self: true },
      ...others.map((r) => ({ ...shown(r), self: false, sessions: sessions.get(r.id) ?? 0 })),
    ];
  }

  /**
   * The start of the drain: peers learn at once that this controller is draining and open nothing more
   * on its peer listener; the streams they opened run on.
   */
  drain(graceMs: number): Promise<unknown> {
    this.#presence.drain();
    this.#listener.stopAccepting();
    return this.#acceptor.drain(graceMs);
  }

  /** Cuts the peer streams still open at the end of the grace period. */
  destroy(err: Error): void {
    this.#acceptor.destroy(err);
  }

  /** Leaves the fleet: deletes the presence entry, closes peer sessions and the listener. */
  async close(): Promise<void> {
    this.#pool.close();
    await this.#presence.close();
    await this.#listener.close();
    this.#redis.disconnect();
  }
}

function shown(r: PresenceRecord): Omit<FleetInstance, 'self'> {
  return { id: r.id, advertise: r.advertise, since: r.since, draining: r.draining, clusters: r.clusters };
}
