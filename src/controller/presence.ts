// Fleet presence (docs/fleet.md): each controller of a fleet keeps one key in Redis saying who it is,
// where its peers dial it, whether it is draining, and which clusters it holds tunnels for with how
// many. The key expires unless refreshed, so a controller that died leaves the view by itself within
// PRESENCE_TTL_MS; one that stops cleanly deletes its key at once. A controller publishes on a channel
// whenever its own entry changes, and every controller re-reads the view when it hears one, so a
// tunnel that lands anywhere is known everywhere within milliseconds, and within the refresh interval
// even when a message was lost. While Redis is away the last view stands: peers still reachable stay
// usable, and the view is rebuilt as soon as Redis answers again.
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';

export const PRESENCE_PREFIX = 'sluice:presence:';
const CHANNEL = 'sluice:presence';
/** How often each controller rewrites its key and re-reads the others. */
export const PRESENCE_REFRESH_MS = 2_000;
/** A key not refreshed for this long is gone: a dead controller leaves the view within it. */
export const PRESENCE_TTL_MS = 6_000;
/** Most presence keys read; a fleet is a handful of controllers, this bounds a polluted keyspace. */
const MAX_INSTANCES = 1_000;

export interface PresenceRecord {
  /** The controller's instance id, unique per process. */
  readonly id: string;
  /** The URL its peers dial (--peer-advertise). */
  readonly advertise: string;
  /** ISO 8601: when it started. */
  readonly since: string;
  /** True once it began to drain: it takes no new streams. */
  readonly draining: boolean;
  /**
   * Cluster name → tunnels it holds for it; 0 for a cluster whose tunnels it lost moments ago (they
   * are probably landing on another controller: peers wait for them rather than fail).
   */
  readonly clusters: Readonly<Record<string, number>>;
}

export interface PresenceOptions {
  /** A client for commands; presence opens a duplicate of it for its subscription. */
  readonly redis: Redis;
  readonly self: Omit<PresenceRecord, 'clusters' | 'draining'>;
  /** This controller's clusters and live tunnel counts, read at every write. */
  readonly clusters: () => Record<string, number>;
  /** Called after every read of the view that changed it (others only, never this controller). */
  readonly onChange: (peers: ReadonlyMap<string, PresenceRecord>) => void;
  readonly log: Logger;
}

export class Presence {
  readonly #options: PresenceOptions;
  readonly #sub: Redis;
  #peers: ReadonlyMap<string, PresenceRecord> = new Map();
  #seen = '';
  #draining = false;
  #closed = false;
  #loaded = false;
  #timer: NodeJS.Timeout;
  /** A write or read asked for while one runs: done once more when it ends. */
  #again = false;
  #running: Promise<void> | undefined;
  /** Whether the last round failed, so an outage is logged once and its end once. */
  #failing: string | undefined;

  constructor(options: PresenceOptions) {
    this.#options = options;
    this.#sub = options.redis.duplicate({ connectionName: `${options.self.id}:presence-sub` });
    // A subscriber in ioredis resubscribes by itself after a reconnect.
    this.#sub.on('error', () => {});
    this.#sub.on('message', (_channel: string, from: string) => {
      if (from !== options.self.id) this.refresh();
    });
    // Subscribed on every (re)connect: a subscribe sent before the connection was up is lost, not queued.
    this.#sub.on('ready', () => {
      this.#sub.subscribe(CHANNEL).then(
        () => this.refresh(),
        () => {},
      );
    });
    this.#timer = setInterval(() => this.refresh(), PRESENCE_REFRESH_MS);
    this.#timer.unref();
    this.refresh();
  }

  /** The other controllers as last read, by id. */
  get peers(): ReadonlyMap<string, PresenceRecord> {
    return this.#peers;
  }

  /** True once the view was read from Redis at least once. */
  get loaded(): boolean {
    return this.#loaded;
  }

  /** Why the last round failed, or undefined when Redis answered. */
  get problem(): string | undefined {
    return this.#failing;
  }

  /** This controller's own entry as it writes it. */
  record(): PresenceRecord {
    return { ...this.#options.self, draining: this.#draining, clusters: this.#options.clusters() };
  }

  /** Marks this controller draining in its entry, at once. */
  drain(): void {
    this.#draining = true;
    this.refresh();
  }

  /** Writes this controller's entry and re-reads the view, soon; calls made meanwhile merge into one. */
  refresh(): void {
    if (this.#closed) return;
    if (this.#running !== undefined) {
      this.#again = true;
      return;
    }
    this.#running = this.#round().finally(() => {
      this.#running = undefined;
      if (this.#again) {
        this.#again = false;
        this.refresh();
      }
    });
  }

  /** Waits for the round under way (tests and shutdown). */
  async settled(): Promise<void> {
    while (this.#running !== undefined) await this.#running;
  }

  async #round(): Promise<void> {
    const { redis, self, log } = this.#options;
    try {
      const key = PRESENCE_PREFIX + self.id;
      const mine = JSON.stringify(this.record());
      // Unchanged: extend the key; gone meanwhile (a restarted Redis lost it), or changed: write it.
      const kept = mine === this.#seen && (await redis.pexpire(key, PRESENCE_TTL_MS)) === 1;
      if (!kept) {
        await redis.set(key, mine, 'PX', PRESENCE_TTL_MS);
        this.#seen = mine;
        await redis.publish(CHANNEL, self.id);
      }
      const peers = await this.#read();
      if (this.#failing !== undefined) log.info({ event: 'presence-restored' }, 'fleet presence restored');
      this.#failing = undefined;
      this.#loaded = true;
      if (!samePeers(peers, this.#peers)) {
        this.#peers = peers;
        this.#options.onChange(peers);
      }
    } catch (err) {
      const message = (err as Error).message;
      if (this.#failing === undefined) {
        log.warn(
          { event: 'presence-failed', err: message },
          'fleet presence not refreshed; keeping the last view',
        );
      }
      this.#failing = message;
      // The key may have lapsed meanwhile: write it whole again next time.
      this.#seen = '';
    }
  }

  async #read(): Promise<Map<string, PresenceRecord>> {
    const { redis, self } = this.#options;
    const keys: string[] = [];
    let cursor = '0';
    for (let rounds = 0; rounds < 100 && keys.length < MAX_INSTANCES; rounds++) {
      const [next, batch] = await redis.scan(cursor, 'MATCH', `${PRESENCE_PREFIX}*`, 'COUNT', 200);
      keys.push(...batch);
      cursor = next;
      if (cursor === '0') break;
    }
    const peers = new Map<string, PresenceRecord>();
    if (keys.length === 0) return peers;
    const values = await redis.mget(...keys.slice(0, MAX_INSTANCES));
    for (const value of values) {
      const record = value === null ? undefined : parseRecord(value);
      if (record !== undefined && record.id !== self.id) peers.set(record.id, record);
    }
    return peers;
  }

  /** Deletes this controller's entry (its peers see it go at once) and closes the subscription. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    await this.settled();
    const { redis, self } = this.#options;
    await redis
      .del(PRESENCE_PREFIX + self.id)
      .then(() => redis.publish(CHANNEL, self.id))
      .catch(() => {});
    this.#sub.disconnect();
  }
}

/** A record as another controller wrote it, or undefined when it is not one (never trusted blindly). */
function parseRecord(text: string): PresenceRecord | undefined {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof o !== 'object' || o === null) return undefined;
  const r = o as Record<string, unknown>;
  if (typeof r.id !== 'string' || typeof r.advertise !== 'string' || typeof r.since !== 'string')
    return undefined;
  if (typeof r.clusters !== 'object' || r.clusters === null) return undefined;
  const clusters: Record<string, number> = {};
  for (const [name, count] of Object.entries(r.clusters)) {
    if (typeof count === 'number' && Number.isInteger(count) && count >= 0) clusters[name] = count;
  }
  return { id: r.id, advertise: r.advertise, since: r.since, draining: r.draining === true, clusters };
}

function samePeers(a: ReadonlyMap<string, PresenceRecord>, b: ReadonlyMap<string, PresenceRecord>): boolean {
  if (a.size !== b.size) return false;
  for (const [id, record] of a) {
    const other = b.get(id);
    if (other === undefined || JSON.stringify(other) !== JSON.stringify(record)) return false;
  }
  return true;
}
