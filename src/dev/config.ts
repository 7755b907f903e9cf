// What `sluice dev` runs with. Dev takes four of the controller's flags, with the same rules, and two of
// its own (--https-listen, and --data for its certificate), and builds its controller's and agent's
// configs through their loaders (controller/config.ts, agent/config.ts) with overrides for what it
// supplies itself: a tunnel listener on a free port, an in-memory store, its demo cluster and route,
// its admin token, and its TLS listener with the self-signed certificate (certificate.ts). Apart from
// dev.ts, so that checking the flags loads no SQLite.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { flag, type FlagValues, readFlag } from '../config/flags.js';
import { type HostPort, parseOptionalHostPort } from '../config/values.js';
import {
  type ControllerConfig,
  DEFAULT_TLS_PEEK_TIMEOUT_MS,
  loadControllerConfig,
  SHARED_WITH_DEV,
} from '../controller/config.js';

/** --https-listen: dev serves the demo over HTTPS too unless it is off. */
const HTTPS_LISTEN = flag({
  name: 'https-listen',
  key: 'httpsListen',
  value: 'ADDR',
  parse: parseOptionalHostPort,
  shown: '127.0.0.1:8443',
  help: 'public HTTPS host:port for the demo (HTTP/2), self-signed certificate kept in --data, or off',
});

/** The controller's --data, same name, variable and rule; in dev it holds only the certificate. */
const DATA = {
  ...SHARED_WITH_DEV.data,
  help: 'where dev keeps its self-signed certificate (its store stays in memory)',
} as const;

/** `sluice dev`'s flags, in the order its usage lists them. */
export const DEV_FLAGS = [
  SHARED_WITH_DEV.listen,
  HTTPS_LISTEN,
  SHARED_WITH_DEV.adminListen,
  DATA,
  SHARED_WITH_DEV.logLevel,
] as const;

/** `sluice dev`'s flags as parsed. */
export type DevFlags = FlagValues<typeof DEV_FLAGS>;

const DEFAULT_HTTPS_LISTEN: HostPort = Object.freeze({ host: '127.0.0.1', port: 8443 });
const DEFAULT_DATA_DIR = './.sluice';

/** What `sluice dev` runs with, checked before anything starts. */
export interface DevConfig {
  readonly flags: DevFlags;
  /** Only the dev flags' variables and SLUICE_ADMIN_TOKEN. */
  readonly env: NodeJS.ProcessEnv;
  /** The admin API's bearer token: SLUICE_ADMIN_TOKEN, or one made up for this run. */
  readonly adminToken: string;
  readonly logLevel: ControllerConfig['logLevel'];
  /** Where the HTTPS listener binds; null: dev serves plain HTTP only, and writes no file. */
  readonly httpsListen: HostPort | null;
  /** Dev's data dir, which holds the certificate files and nothing else. */
  readonly dataDir: string;
}

/** The certificate files in dev's data dir. */
export interface DevCertPaths {
  readonly cert: string;
  readonly key: string;
}

export function devCertPaths(dataDir: string): DevCertPaths {
  return { cert: join(dataDir, 'dev-cert.pem'), key: join(dataDir, 'dev-key.pem') };
}

// Dev's controller: the agent is in this process, so the tunnel needs no fixed port; ':memory:' keeps
// the SQLite store's state in memory, so that dev writes no file but its certificate.
const DEV_CONTROLLER = { tunnelListen: 'tcp://127.0.0.1:0', data: ':memory:' } as const;

/**
 * Checks dev's flags, the shared ones through the controller's loader, so that a bad one fails as it
 * would for `sluice controller` (a ConfigError, exit 2), before the demo starts.
 */
export function loadDevConfig(flags: DevFlags, env: NodeJS.ProcessEnv): DevConfig {
  const adminToken = env.SLUICE_ADMIN_TOKEN ?? `sluadm_${randomBytes(32).toString('base64url')}`;
  const dataDir = readFlag(DATA, flags, env) ?? DEFAULT_DATA_DIR;
  const httpsListen = readFlag(HTTPS_LISTEN, flags, env);
  const partial = { flags, env, adminToken, logLevel: 'info', dataDir, httpsListen: null } as const;
  const config = controllerConfig(partial, {});
  return {
    flags,
    env,
    adminToken,
    logLevel: config.logLevel,
    httpsListen: httpsListen === undefined ? DEFAULT_HTTPS_LISTEN : httpsListen,
    dataDir,
  };
}

/** Dev's controller config, through the controller's loader, with what dev itself supplies. */
export function controllerConfig(
  dev: DevConfig,
  overrides: Pick<ControllerConfig, 'clusters' | 'routes'> | Record<string, never>,
): ControllerConfig {
  const { listen, adminListen, logLevel } = dev.flags;
  return loadControllerConfig({
    flags: { listen, adminListen, logLevel, ...DEV_CONTROLLER },
    env: dev.env,
    overrides: { adminToken: dev.adminToken, ...tlsOf(dev), ...overrides },
  });
}

/** The controller's TLS listener: at --https-listen, with the one certificate dev makes. */
function tlsOf(dev: DevConfig): Pick<ControllerConfig, 'tls'> {
  if (dev.httpsListen === null) return {};
  const certs = [devCertPaths(dev.dataDir)];
  return {
    tls: { listen: dev.httpsListen, certs, unknownName: 'first', peekTimeoutMs: DEFAULT_TLS_PEEK_TIMEOUT_MS },
  };
}
