import type { Logger } from 'pino';
import type { ControllerConfig } from './config.js';

export interface ControllerHandle {
  /** http://host:port actually bound. */
  readonly publicUrl: string;
  /** The tunnel listener URL actually bound. */
  readonly tunnelUrl: string;
  /** Stops accepting, drains tunnels and in-flight requests for up to `graceMs`, then tears down. */
  close(graceMs?: number): Promise<void>;
}

export async function startController(config: ControllerConfig, logger: Logger): Promise<ControllerHandle> {
  void config;
  void logger;
  throw new Error('not built yet');
}
