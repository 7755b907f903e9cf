// What the controller opens before it binds anything, so that a setting at fault is named before a port
// is taken: the tunnel listener's certificate and key, and the store (SQLite or Redis). Each failure is a
// ConfigError naming the key (the CLI exits 2).
import { readConfiguredFile } from '../config/startup.js';
import { ConfigError, SluiceError } from '../errors.js';
import type { Store } from '../store/store.js';
import { checkListenOptions } from '../transport/index.js';
import type { ControllerConfig } from './config.js';

/** The tunnel listener's cert and key, read and checked together; ConfigErrors name the keys. */
export function readTunnelTls(config: ControllerConfig): { cert?: Buffer; key?: Buffer } {
  const { tunnelCert, tunnelKey } = config;
  if (tunnelCert === undefined || tunnelKey === undefined) return {};
  const cert = readConfiguredFile('tunnelCert', tunnelCert, 'SLUICE_ERR_TLS_CONFIG');
  const key = readConfiguredFile('tunnelKey', tunnelKey, 'SLUICE_ERR_TLS_CONFIG');
  try {
    checkListenOptions({ url: config.tunnelListen, cert, key });
  } catch (err) {
    if (!(err instanceof SluiceError) || err.code !== 'SLUICE_ERR_TLS_CONFIG') throw err;
    const reason = err.cause instanceof Error ? err.cause.message : err.message;
    const files = `${JSON.stringify(tunnelCert)} and tunnelKey ${JSON.stringify(tunnelKey)}`;
    throw new ConfigError('tunnelCert', `${files} are not usable: ${reason}`, err.code, { cause: err });
  }
  return { cert, key };
}

/**
 * The store `config.store` names: the SQLite store in the data dir, or the Redis store a fleet shares,
 * each loaded only here (a process that never runs a controller with its own store, an agent, needs
 * neither the native module nor a Redis client). A Redis that does not answer within a bounded time is a
 * ConfigError naming `store`, not a hang.
 */
export async function openStore(config: Pick<ControllerConfig, 'dataDir' | 'store'>): Promise<Store> {
  const { dataDir, store } = config;
  if (store.kind !== 'sqlite') {
    const { openRedisStore } = await import('../store/redis.js');
    try {
      return await openRedisStore(store);
    } catch (err) {
      if (!(err instanceof SluiceError)) throw err;
      throw new ConfigError('store', `cannot be used: ${err.message}`, 'SLUICE_ERR_STORE_UNAVAILABLE', {
        cause: err,
      });
    }
  }
  const { openSqliteStore } = await import('../store/sqlite.js');
  try {
    return openSqliteStore(dataDir);
  } catch (err) {
    throw new ConfigError(
      'dataDir',
      `${JSON.stringify(dataDir)} cannot be opened: ${(err as Error).message}`,
      'SLUICE_ERR_INVALID_OPTION',
      { cause: err },
    );
  }
}
