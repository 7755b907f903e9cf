import type { Logger } from 'pino';
import type { AgentConfig } from './config.js';

export interface AgentHandle {
  /** Sends GO_AWAY on every tunnel, lets in-flight streams finish for up to `graceMs`, then stops. */
  close(graceMs?: number): Promise<void>;
}

export async function startAgent(config: AgentConfig, logger: Logger): Promise<AgentHandle> {
  void config;
  void logger;
  throw new Error('not built yet');
}
