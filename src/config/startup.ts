// Startup failures caused by what the configuration names: a file that cannot be read, an address that
// cannot be bound. Each becomes a ConfigError naming the key, so the operator is pointed at the setting
// to change, and the CLI exits 2 (docs/configuration.md "Exit codes") as for any other bad value.
import { readFileSync } from 'node:fs';
import { ConfigError, type SluiceErrorCode } from '../errors.js';
import { show } from './values.js';

/**
 * The contents of the file `key` names. `flags` says where else the key is set (e.g. `--ca, $SLUICE_CA`),
 * for keys that are not in a config file.
 */
export function readConfiguredFile(
  key: string,
  path: string,
  code: SluiceErrorCode = 'SLUICE_ERR_INVALID_OPTION',
  flags?: string,
): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    const where = flags === undefined ? '' : ` (${flags})`;
    throw new ConfigError(key, `file ${show(path)} cannot be read${where}: ${(err as Error).message}`, code, {
      cause: err,
    });
  }
}

// The bind errors that a setting causes and a setting fixes.
const BIND_FAILURES: Record<string, string> = {
  EADDRINUSE: 'address already in use (EADDRINUSE): stop what holds it, or choose another address',
  EADDRNOTAVAIL: 'address not available on this host (EADDRNOTAVAIL)',
  EACCES: 'permission denied (EACCES): ports below 1024 need privileges',
};

/**
 * A listener for `key` failed to bind `address`. Returns a ConfigError when the address is at fault
 * (in use, not on this host, privileged), else `err` itself.
 */
export function bindFailure(key: string, address: string, err: unknown): unknown {
  const code = errnoOf(err);
  const reason = code === undefined ? undefined : BIND_FAILURES[code];
  if (reason === undefined) return err;
  return new ConfigError(key, `${address} cannot be bound: ${reason}`, 'SLUICE_ERR_INVALID_OPTION', {
    cause: err,
  });
}

function errnoOf(err: unknown): string | undefined {
  // A TransportError carries the code of its cause; a net/http server error carries its own.
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}
