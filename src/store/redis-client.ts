// One way to reach the fleet's Redis from a StoreLocation: the store, presence and the peer secret all
// connect through here, so that redis://, rediss:// and the Sentinel form mean the same everywhere.
// Commands fail fast while Redis is away (no offline queue, one retry), so that a caller can answer
// "store unavailable" at once instead of hanging; the client keeps reconnecting in the background.
import { Redis, type RedisOptions } from 'ioredis';
import type { StoreLocation } from './model.js';

/** Reconnect delays: 50 ms doubling to 2 s, forever; the caller watches `ready`/`end` events. */
function retryStrategy(times: number): number {
  return Math.min(50 * 2 ** Math.min(times, 6), 2_000);
}

export interface RedisClientOptions {
  /** CLIENT SETNAME, shown by CLIENT LIST: which controller holds the connection and what for. */
  readonly name: string;
}

/** A new client for `location`, which must be a Redis one. Connects at once, in the background. */
export function connectRedis(
  location: Exclude<StoreLocation, { kind: 'sqlite' }>,
  options: RedisClientOptions,
): Redis {
  const common: RedisOptions = {
    connectionName: options.name,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    retryStrategy,
    connectTimeout: 5_000,
  };
  if (location.kind === 'redis') return new Redis(location.url, common);
  const url = new URL(location.url.replace(/^rediss?\+sentinel:/, 'redis:'));
  const password = url.password === '' ? undefined : decodeURIComponent(url.password);
  const username = url.username === '' ? undefined : decodeURIComponent(url.username);
  return new Redis({
    ...common,
    sentinels: location.sentinels.map(({ host, port }) => ({ host, port })),
    name: location.name,
    db: location.db,
    ...(password === undefined ? {} : { password, sentinelPassword: password }),
    ...(username === undefined ? {} : { username }),
    ...(location.tls ? { tls: {}, sentinelTLS: {}, enableTLSForSentinelMode: true } : {}),
  });
}
