// What `sluice dev` runs with. Dev takes three of the controller's flags, with the same rules, and
// builds its controller's and agent's configs through their loaders (controller/config.ts,
// agent/config.ts) with overrides for what it supplies itself: a tunnel listener on a free port, an
// in-memory store, its demo cluster and route, its admin token. Apart from dev.ts, so that checking the
// flags loads no SQLite.
import { randomBytes } from 'node:crypto';
import type { FlagValues } from '../config/flags.js';
import { type ControllerConfig, DEV_FLAGS, loadControllerConfig } from '../controller/config.js';

/** `sluice dev`'s flags as parsed: --listen, --admin-listen and --log-level, the controller's own. */
export type DevFlags = FlagValues<typeof DEV_FLAGS>;

/** What `sluice dev` runs with, checked before anything starts. */
export interface DevConfig {
  readonly flags: DevFlags;
  /** Only the dev flags' variables and SLUICE_ADMIN_TOKEN. */
  readonly env: NodeJS.ProcessEnv;
  /** The admin API's bearer token: SLUICE_ADMIN_TOKEN, or one made up for this run. */
  readonly adminToken: string;
  readonly logLevel: ControllerConfig['logLevel'];
}

// Dev's controller: the agent is in this process, so the tunnel needs no fixed port; ':memory:' keeps
// the SQLite store's state in memory, so that dev writes no files.
const DEV_CONTROLLER = { tunnelListen: 'tcp://127.0.0.1:0', data: ':memory:' } as const;

/**
 * Checks dev's flags through the controller's loader, so that a bad one fails as it would for
 * `sluice controller` (a ConfigError, exit 2), before the demo starts.
 */
export function loadDevConfig(flags: DevFlags, env: NodeJS.ProcessEnv): DevConfig {
  const adminToken = env.SLUICE_ADMIN_TOKEN ?? `sluadm_${randomBytes(32).toString('base64url')}`;
  const config = controllerConfig({ flags, env, adminToken, logLevel: 'info' }, {});
  return { flags, env, adminToken, logLevel: config.logLevel };
}

/** Dev's controller config, through the controller's loader, with what dev itself supplies. */
export function controllerConfig(
  dev: DevConfig,
  overrides: Pick<ControllerConfig, 'clusters' | 'routes'> | Record<string, never>,
): ControllerConfig {
  return loadControllerConfig({
    flags: { ...dev.flags, ...DEV_CONTROLLER },
    env: dev.env,
    overrides: { adminToken: dev.adminToken, ...overrides },
  });
}
