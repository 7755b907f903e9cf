// The fleet's store: the same state as the SQLite store, in Redis, which every controller of a fleet
// shares (docs/fleet.md). Everything lives under the `sluice:` prefix: four hashes (clusters, tokens by
// id, routes by "host path", and the seed owners of each config entry), a settings hash for claim(),
// and a version counter.
//
// A write reads a snapshot (the version and the four hashes, in one MULTI), computes the new state in
// JS with the same rules as sqlite.ts, and applies the difference with one Lua script that first checks
// the version is unchanged: optimistic concurrency, so a write is all or nothing, however many keys it
// touches, and two controllers writing at once retry rather than interleave. The script also PUBLISHes
// the change, so that it reaches the other controllers only if it was made.
//
// While Redis is away every method rejects at once (or within COMMAND_TIMEOUT_MS) with StoreUnavailable,
// and health() says why; the controller serves from its caches meanwhile. When the change subscription
// is back, watchers hear `{kind: 'reset'}`: what was published meanwhile was lost.
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Route, StoreLocation } from './model.js';
import { connectRedis } from './redis-client.js';
import {
  type AgentRouteConflict,
  type AgentRoutesResult,
  type ClusterRecord,
  hostHolder,
  type RouteRecord,
  type Seed,
  type Source,
  type Store,
  ChangeWatchers,
  type StoreChange,
  StoreConflict,
  type StoreHealth,
  StoreUnavailable,
  type TokenRecord,
} from './store.js';

export const KEY_PREFIX = 'sluice:';
export const CHANGES_CHANNEL = `${KEY_PREFIX}changes`;
const VERSION_KEY = `${KEY_PREFIX}version`;
const SETTINGS_KEY = `${KEY_PREFIX}settings`;
/** The hashes a write may change, in the order the script's KEYS[2..] name them. */
const HASHES = ['clusters', 'tokens', 'routes', 'owners'] as const;
type HashName = (typeof HASHES)[number];
const HASH_KEYS = HASHES.map((name) => `${KEY_PREFIX}${name}`);

/** A command that takes longer is given up as StoreUnavailable: the caller must never hang. */
export const COMMAND_TIMEOUT_MS = 1_500;
/** How long openRedisStore waits for both connections before it gives up. */
export const CONNECT_TIMEOUT_MS = 10_000;
/** Bounds on retrying a write that lost a race with another controller's. */
const MAX_ATTEMPTS = 200;
const RETRY_DEADLINE_MS = 10_000;

// KEYS[1] the version, KEYS[2..5] the hashes; ARGV[1] the version the snapshot saw, ARGV[2] the
// channel, ARGV[3] the message ('' for none), ARGV[4] the ops as JSON: [hash index, field, value] sets,
// [hash index, field] deletes.
const APPLY_SCRIPT = `
local seen = redis.call('GET', KEYS[1]) or '0'
if seen ~= ARGV[1] then return 0 end
for _, op in ipairs(cjson.decode(ARGV[4])) do
  local key = KEYS[op[1] + 1]
  if op[3] then redis.call('HSET', key, op[2], op[3]) else redis.call('HDEL', key, op[2]) end
end
redis.call('INCR', KEYS[1])
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return 1
`;

// KEYS[1] the settings hash; ARGV[1] the key, ARGV[2] the value: set if absent, answer what holds.
const CLAIM_SCRIPT = `
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
return redis.call('HGET', KEYS[1], ARGV[1])
`;

type Op = [hash: number, field: string, value?: string];

interface ApplyingRedis extends Redis {
  sluiceApply(...args: string[]): Promise<number>;
  sluiceClaim(key: string, name: string, value: string): Promise<string>;
}

/** The whole state as a write sees it; records are replaced, never mutated, so a copy is shallow. */
interface State {
  clusters: Map<string, ClusterRecord>;
  tokens: Map<string, TokenRecord>;
  routes: Map<string, RouteRecord>;
  /** "kind key" (as sqlite's seed_owners) → the seed sources that list that config entry. */
  owners: Map<string, string[]>;
}

interface Outcome<T> {
  result: T;
  /** None when the write changed nothing. */
  change?: StoreChange;
}

export interface RedisStoreOptions {
  /** Where connection losses and recoveries are reported; none by default. */
  readonly logger?: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };
  /** Default CONNECT_TIMEOUT_MS. */
  readonly connectTimeoutMs?: number;
}

/**
 * Connects to `location` and resolves once both the command and the subscriber connection are ready;
 * rejects with StoreUnavailable when they are not within the connect timeout.
 */
export async function openRedisStore(
  location: Exclude<StoreLocation, { kind: 'sqlite' }>,
  options: RedisStoreOptions = {},
): Promise<RedisStore> {
  const store = new RedisStore(location, options);
  try {
    await store.ready(options.connectTimeoutMs ?? CONNECT_TIMEOUT_MS);
  } catch (err) {
    await store.close();
    throw err;
  }
  return store;
}

export class RedisStore implements Store {
  /** Tells this store's own changes from other controllers' on the channel. */
  readonly instance = randomBytes(8).toString('hex');
  readonly #client: ApplyingRedis;
  readonly #subscriber: Redis;
  readonly #watchers = new ChangeWatchers();
  readonly #logger: RedisStoreOptions['logger'];
  readonly #where: string;
  #subscribed = false;
  #everSubscribed = false;
  #lastError: string | undefined;
  #closed = false;
  /** What this store last seeded and the settings it holds: put back should Redis come back empty. */
  #lastSeed: { seed: Seed; source: string } | undefined;
  readonly #claims = new Map<string, string>();

  constructor(location: Exclude<StoreLocation, { kind: 'sqlite' }>, options: RedisStoreOptions = {}) {
    this.#logger = options.logger;
    this.#where = maskedUrl(location.url);
    this.#client = connectRedis(location, { name: 'sluice-store' }) as ApplyingRedis;
    this.#client.defineCommand('sluiceApply', { numberOfKeys: 1 + HASHES.length, lua: APPLY_SCRIPT });
    this.#client.defineCommand('sluiceClaim', { numberOfKeys: 1, lua: CLAIM_SCRIPT });
    this.#subscriber = connectRedis(location, { name: 'sluice-store-changes' });
    for (const conn of [this.#client, this.#subscriber]) {
      conn.on('error', (err: Error) => {
        this.#lastError = err.message;
      });
    }
    this.#client.on('close', () => this.#lost('commands'));
    this.#subscriber.on('close', () => {
      this.#subscribed = false;
      this.#lost('changes');
    });
    this.#subscriber.on('ready', () => void this.#subscribe());
    this.#subscriber.on('message', (channel: string, message: string) => this.#onMessage(channel, message));
  }

  /** Resolves when both connections are up and the change channel is subscribed. */
  async ready(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < 100_000 && !(this.#client.status === 'ready' && this.#subscribed); i++) {
      if (Date.now() > deadline) {
        throw new StoreUnavailable(`${this.#unreachable()} (gave up after ${timeoutMs} ms)`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  health(): StoreHealth {
    if (this.#closed) return { ok: false, reason: 'the store is closed' };
    if (this.#client.status === 'ready' && this.#subscribed) return { ok: true };
    return { ok: false, reason: this.#unreachable() };
  }

  async listClusters(): Promise<ClusterRecord[]> {
    const all = await this.#call(() => this.#client.hvals(HASH_KEYS[0]!));
    return all.map((v) => JSON.parse(v) as ClusterRecord).sort((a, b) => compare(a.name, b.name));
  }

  async getCluster(name: string): Promise<ClusterRecord | undefined> {
    const value = await this.#call(() => this.#client.hget(HASH_KEYS[0]!, name));
    return value === null ? undefined : (JSON.parse(value) as ClusterRecord);
  }

  addCluster(name: string, source: Source = 'api'): Promise<ClusterRecord> {
    return this.#write((s) => {
      if (s.clusters.has(name)) {
        throw new StoreConflict(`cluster ${JSON.stringify(name)} already exists`, 'name');
      }
      const record = { name, created: now(), source };
      s.clusters.set(name, record);
      return { result: record, change: { kind: 'cluster', op: 'add', name } };
    });
  }

  removeCluster(name: string): Promise<boolean> {
    return this.#write((s) => {
      if (!s.clusters.has(name)) return { result: false };
      const routes = [...s.routes.values()].filter((r) => r.cluster === name && r.source !== 'agent').length;
      if (routes > 0) {
        throw new StoreConflict(
          `cluster ${JSON.stringify(name)} still has ${routes} route(s); remove them first`,
          'name',
        );
      }
      for (const [key, r] of s.routes) if (r.cluster === name) s.routes.delete(key);
      deleteCluster(s, name);
      return { result: true, change: { kind: 'cluster', op: 'remove', name } };
    });
  }

  addToken(cluster: string, hash: string, source: Source = 'api'): Promise<TokenRecord> {
    return this.#write((s) => {
      if (!s.clusters.has(cluster)) {
        throw new StoreConflict(`names no cluster: ${JSON.stringify(cluster)}`, 'cluster');
      }
      if ([...s.tokens.values()].some((t) => t.hash === hash)) {
        throw new StoreConflict('a token with this hash is already stored', 'hash');
      }
      const record: TokenRecord = { id: tokenId(), cluster, hash, created: now(), revoked: null, source };
      s.tokens.set(record.id, record);
      return { result: record, change: { kind: 'token', op: 'add', id: record.id, cluster } };
    });
  }

  async listTokens(cluster: string): Promise<TokenRecord[]> {
    return (await this.#tokens()).filter((t) => t.cluster === cluster);
  }

  revokeToken(id: string): Promise<TokenRecord | undefined> {
    return this.#write((s) => {
      const record = s.tokens.get(id);
      if (record === undefined || record.revoked !== null) return { result: record };
      const revoked = { ...record, revoked: now() };
      s.tokens.set(id, revoked);
      return { result: revoked, change: { kind: 'token', op: 'revoke', id, cluster: record.cluster } };
    });
  }

  async activeTokens(): Promise<{ cluster: string; hash: string }[]> {
    return (await this.#tokens())
      .filter((t) => t.revoked === null)
      .map(({ cluster, hash }) => ({ cluster, hash }));
  }

  async revokedTokens(): Promise<{ id: string; hash: string }[]> {
    return (await this.#tokens()).filter((t) => t.revoked !== null).map(({ id, hash }) => ({ id, hash }));
  }

  async listRoutes(): Promise<RouteRecord[]> {
    const all = await this.#call(() => this.#client.hvals(HASH_KEYS[2]!));
    return all
      .map((v) => JSON.parse(v) as RouteRecord)
      .sort((a, b) => compare(a.host, b.host) || compare(a.path, b.path));
  }

  addRoute(route: Route, source: Source = 'api'): Promise<RouteRecord> {
    return this.#write((s) => {
      const record: RouteRecord = {
        host: route.host,
        path: route.path ?? '/',
        cluster: route.cluster,
        target: route.target,
        ...(route.serverName === undefined ? {} : { serverName: route.serverName }),
        ...(route.tls === undefined ? {} : { tls: route.tls }),
        created: now(),
        source,
      };
      const key = routeKey(record.host, record.path);
      if (s.routes.has(key)) {
        throw new StoreConflict(
          `a route for host ${record.host}, path ${record.path} already exists`,
          'host',
        );
      }
      if (!s.clusters.has(record.cluster)) {
        throw new StoreConflict(`names no cluster: ${JSON.stringify(record.cluster)}`, 'cluster');
      }
      s.routes.set(key, record);
      return { result: record, change: { kind: 'route', op: 'add', host: record.host, path: record.path } };
    });
  }

  removeRoute(host: string, path: string): Promise<boolean> {
    return this.#write((s) => {
      if (!s.routes.delete(routeKey(host, path))) return { result: false };
      return { result: true, change: { kind: 'route', op: 'remove', host, path } };
    });
  }

  replaceAgentRoutes(cluster: string, routes: readonly Route[]): Promise<AgentRoutesResult> {
    return this.#write((s) => {
      if (!s.clusters.has(cluster)) {
        throw new StoreConflict(`names no cluster: ${JSON.stringify(cluster)}`, 'cluster');
      }
      const before = new Map<string, RouteRecord>();
      for (const [key, r] of s.routes) {
        if (r.source !== 'agent' || r.cluster !== cluster) continue;
        before.set(key, r);
        s.routes.delete(key);
      }
      const stored: Route[] = [];
      const conflicts: AgentRouteConflict[] = [];
      let changed = false;
      for (const r of routes) {
        const path = r.path ?? '/';
        const holder = hostHolder(s.routes.values(), cluster, r.host);
        if (holder !== undefined) {
          conflicts.push({ host: r.host, path, holder });
          continue;
        }
        const key = routeKey(r.host, path);
        const old = before.get(key);
        before.delete(key);
        changed ||= old?.target !== r.target;
        const record: RouteRecord = {
          host: r.host,
          path,
          cluster,
          target: r.target,
          created: old?.created ?? now(),
          source: 'agent',
        };
        s.routes.set(key, record);
        stored.push({ host: r.host, path, cluster, target: r.target });
      }
      const result = { stored, conflicts };
      if (!changed && before.size === 0) return { result };
      return { result, change: { kind: 'agent-routes', op: 'replace', cluster } };
    });
  }

  async seed(seed: Seed, source: string): Promise<void> {
    await this.#write((s) => {
      claimSeed(s, seed, source);
      dropUnowned(s);
      upsertSeed(s, seed);
      return { result: undefined, change: { kind: 'seed', op: 'seed', source } };
    });
    this.#lastSeed = { seed, source };
  }

  async claim(key: string, value: string): Promise<string> {
    const held = await this.#call(() => this.#client.sluiceClaim(SETTINGS_KEY, key, value));
    this.#claims.set(key, held);
    return held;
  }

  watch(onChange: (change: StoreChange) => void): () => void {
    return this.#watchers.add(onChange);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#watchers.clear();
    // disconnect(), not quit(): it never waits on a Redis that is away.
    this.#client.disconnect();
    this.#subscriber.disconnect();
  }

  async #tokens(): Promise<TokenRecord[]> {
    const all = await this.#call(() => this.#client.hvals(HASH_KEYS[1]!));
    return all
      .map((v) => JSON.parse(v) as TokenRecord)
      .sort((a, b) => compare(a.created, b.created) || compare(a.id, b.id));
  }

  /**
   * Runs `mutate` on a snapshot and applies what it changed, if the state is still that snapshot;
   * else reads again and retries, a bounded number of times. The change reaches local watchers once,
   * synchronously, before the returned promise resolves; other controllers hear it through the channel.
   */
  async #write<T>(mutate: (state: State) => Outcome<T>): Promise<T> {
    const deadline = Date.now() + RETRY_DEADLINE_MS;
    for (let attempt = 1; ; attempt++) {
      const { version, state } = await this.#snapshot();
      const draft: State = {
        clusters: new Map(state.clusters),
        tokens: new Map(state.tokens),
        routes: new Map(state.routes),
        owners: new Map(state.owners),
      };
      const { result, change } = mutate(draft);
      const ops = diff(state, draft);
      if (change === undefined && ops.length === 0) return result;
      const message = change === undefined ? '' : JSON.stringify({ instance: this.instance, change });
      const applied = await this.#call(() =>
        this.#client.sluiceApply(
          VERSION_KEY,
          ...HASH_KEYS,
          version,
          CHANGES_CHANNEL,
          message,
          JSON.stringify(ops),
        ),
      );
      if (applied === 1) {
        if (change !== undefined) this.#watchers.emit(change);
        return result;
      }
      if (attempt >= MAX_ATTEMPTS || Date.now() > deadline) {
        throw new StoreUnavailable(`a write kept losing races with other writers (${attempt} attempts)`);
      }
      // Another writer got in between: back off a little, at random, so that two do not collide again.
      await new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(attempt, 20)));
    }
  }

  async #snapshot(): Promise<{ version: string; state: State }> {
    const replies = await this.#call(async () => {
      const multi = this.#client.multi().get(VERSION_KEY);
      for (const key of HASH_KEYS) multi.hgetall(key);
      return (await multi.exec()) ?? [];
    });
    const values = replies.map(([err, value]) => {
      if (err) throw err;
      return value;
    });
    const hash = (name: HashName): [string, string][] =>
      Object.entries(values[1 + HASHES.indexOf(name)] as Record<string, string>);
    const parsed = <V>(name: HashName): Map<string, V> =>
      new Map(hash(name).map(([field, value]) => [field, JSON.parse(value) as V]));
    return {
      version: (values[0] as string | null) ?? '0',
      state: {
        clusters: parsed('clusters'),
        tokens: parsed('tokens'),
        routes: parsed('routes'),
        owners: parsed('owners'),
      },
    };
  }

  /** Runs one Redis call, failing fast as StoreUnavailable when Redis is away or slow. */
  async #call<T>(run: () => Promise<T>): Promise<T> {
    if (this.#closed) throw new StoreUnavailable('the store is closed');
    if (this.#client.status !== 'ready') throw new StoreUnavailable(this.#unreachable());
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new StoreUnavailable(`${this.#where} did not answer within ${COMMAND_TIMEOUT_MS} ms`)),
        COMMAND_TIMEOUT_MS,
      );
    });
    try {
      return await Promise.race([run(), late]);
    } catch (err) {
      if (err instanceof StoreUnavailable || err instanceof StoreConflict) throw err;
      // A ReplyError is Redis refusing a command (a bug here, or a full memory): not an outage.
      if (err instanceof Error && err.name === 'ReplyError') throw err;
      throw new StoreUnavailable(`${this.#where}: ${(err as Error).message}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
  }

  async #subscribe(): Promise<void> {
    try {
      await this.#subscriber.subscribe(CHANGES_CHANNEL);
    } catch (err) {
      this.#lastError = (err as Error).message;
      return;
    }
    this.#subscribed = true;
    if (!this.#everSubscribed) {
      this.#everSubscribed = true;
      return;
    }
    await this.#restore();
    this.#logger?.info({ store: this.#where }, 'store connection restored; rebuilding caches');
    this.#watchers.emit({ kind: 'reset' });
  }

  /**
   * Before the caches are rebuilt after an outage: put back this store's claimed settings and its
   * last seed. A Redis that restarted without persistence comes back empty, and every controller of
   * the fleet comes back at its own moment: a controller that rebuilt from what another had only
   * begun to write back (its claims, say, and not yet its seed) would serve an empty route table until
   * the next change. Each one seeds again itself (a seed that changes nothing writes nothing), so its
   * rebuild always sees its own YAML's entries. Entries made through the API are lost with an empty
   * Redis.
   */
  async #restore(): Promise<void> {
    try {
      for (let i = 0; i < 250 && this.#client.status !== 'ready' && !this.#closed; i++) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      if ((await this.#call(() => this.#client.exists(VERSION_KEY))) === 0) {
        this.#logger?.warn({ store: this.#where }, 'the store came back empty; seeding it again');
      }
      for (const [key, value] of this.#claims) await this.claim(key, value);
      if (this.#lastSeed !== undefined) await this.seed(this.#lastSeed.seed, this.#lastSeed.source);
    } catch (err) {
      this.#logger?.warn({ store: this.#where, err: (err as Error).message }, 'store not restored');
    }
  }

  #lost(what: string): void {
    if (this.#closed) return;
    this.#logger?.warn(
      { store: this.#where, connection: what, err: this.#lastError },
      'store connection lost',
    );
  }

  #onMessage(channel: string, message: string): void {
    if (channel !== CHANGES_CHANNEL) return;
    let parsed: { instance?: unknown; change?: StoreChange };
    try {
      parsed = JSON.parse(message) as typeof parsed;
    } catch {
      return;
    }
    if (parsed.instance === this.instance || typeof parsed.change?.kind !== 'string') return;
    this.#watchers.emit(parsed.change);
  }

  #unreachable(): string {
    const why = this.#lastError === undefined ? '' : `: ${this.#lastError}`;
    return `Redis at ${this.#where} is unreachable${why}`;
  }
}

/** The set/delete ops that turn `before` into `after`, hash by hash. */
function diff(before: State, after: State): Op[] {
  const ops: Op[] = [];
  HASHES.forEach((name, index) => {
    const old = before[name] as Map<string, unknown>;
    const now = after[name] as Map<string, unknown>;
    for (const [field, value] of now) {
      const text = JSON.stringify(value);
      if (!old.has(field) || JSON.stringify(old.get(field)) !== text) ops.push([index + 1, field, text]);
    }
    for (const field of old.keys()) if (!now.has(field)) ops.push([index + 1, field]);
  });
  return ops;
}

/** This source's claims are replaced by what it lists now; other sources' claims stay. */
function claimSeed(s: State, seed: Seed, source: string): void {
  for (const [key, sources] of s.owners) {
    if (!sources.includes(source)) continue;
    const rest = sources.filter((x) => x !== source);
    if (rest.length === 0) s.owners.delete(key);
    else s.owners.set(key, rest);
  }
  const claim = (key: string): void => {
    const sources = s.owners.get(key) ?? [];
    if (!sources.includes(source)) s.owners.set(key, [...sources, source].sort());
  };
  for (const c of seed.clusters) {
    claim(`cluster ${c.name}`);
    for (const hash of c.hashes) claim(`token ${hash}`);
  }
  for (const r of seed.routes) claim(`route ${routeKey(r.host, r.path ?? '/')}`);
}

/** Deletes the config entries no source lists any more: routes, then tokens, then clusters. */
function dropUnowned(s: State): void {
  const unowned = (record: { source: Source }, key: string): boolean =>
    record.source === 'config' && !s.owners.has(key);
  for (const [key, r] of s.routes) if (unowned(r, `route ${key}`)) s.routes.delete(key);
  for (const [id, t] of s.tokens) if (unowned(t, `token ${t.hash}`)) s.tokens.delete(id);
  for (const [name, c] of s.clusters) {
    if (!unowned(c, `cluster ${name}`)) continue;
    for (const [key, r] of s.routes) if (r.cluster === name) s.routes.delete(key);
    deleteCluster(s, name);
  }
}

function upsertSeed(s: State, seed: Seed): void {
  const created = now();
  const byHash = new Map([...s.tokens.values()].map((t) => [t.hash, t]));
  for (const c of seed.clusters) {
    const cluster = s.clusters.get(c.name);
    s.clusters.set(c.name, { name: c.name, created: cluster?.created ?? created, source: 'config' });
    for (const hash of c.hashes) {
      // A token moves to the cluster the file names; a revoked one stays revoked.
      const token = byHash.get(hash);
      const id = token?.id ?? tokenId();
      const record: TokenRecord = {
        id,
        cluster: c.name,
        hash,
        created: token?.created ?? created,
        revoked: token?.revoked ?? null,
        source: 'config',
      };
      s.tokens.set(id, record);
      byHash.set(hash, record);
    }
  }
  for (const r of seed.routes) {
    const path = r.path ?? '/';
    const key = routeKey(r.host, path);
    const route = s.routes.get(key);
    s.routes.set(key, {
      host: r.host,
      path,
      cluster: r.cluster,
      target: r.target,
      ...(r.serverName === undefined ? {} : { serverName: r.serverName }),
      ...(r.tls === undefined ? {} : { tls: r.tls }),
      created: route?.created ?? created,
      source: 'config',
    });
  }
}

/** A cluster goes with its tokens (their revocations too), as sqlite's ON DELETE CASCADE. */
function deleteCluster(s: State, name: string): void {
  s.clusters.delete(name);
  for (const [id, t] of s.tokens) if (t.cluster === name) s.tokens.delete(id);
}

/** The URL without its credentials, for messages and logs. */
function maskedUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//');
}

function tokenId(): string {
  return `tok_${randomBytes(8).toString('hex')}`;
}

function routeKey(host: string, path: string): string {
  return `${host} ${path}`;
}

/** Code unit order, as SQLite's BINARY collation sorts ASCII. */
function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function now(): string {
  return new Date().toISOString();
}
