// The agent's configuration: defaults < SLUICE_* environment < flags. Validated in one place; the
// result is frozen. (Loader to be written; the types are the contract.)
import type { HostPort, LogLevel } from '../controller/config.js';
import type { SessionOptions } from '../tunnel/options.js';

export interface AgentConfig {
  /** Transport URL of the controller's tunnel listener: tcp://, tls://, ws:// or wss://. */
  readonly controller: string;
  /** The agent token. Never logged. */
  readonly token: string;
  readonly name: string;
  /** Distinguishes replicas of one agent name (defaults to a random id). */
  readonly replica: string;
  /** Tunnels held open, 1..16. */
  readonly tunnels: number;
  /** --allow patterns; empty means the policy's defaults. */
  readonly allow: readonly string[];
  readonly healthListen: HostPort | null;
  /** PEM file path of a CA to trust for tls:// and wss://. */
  readonly ca?: string;
  /** Name the controller's certificate must carry, when it differs from the URL host. */
  readonly servername?: string;
  /** Connecting to a target must finish within this, or the stream fails with TARGET_UNREACHABLE. */
  readonly connectTimeoutMs: number;
  readonly tunnel: SessionOptions;
  readonly logLevel: LogLevel;
}
