// The controller's configuration: defaults < YAML file < SLUICE_* environment < flags. Validated in one
// place; the result is frozen. (Loader to be written; the types are the contract.)
import type { SessionOptions } from '../tunnel/options.js';
import type { Route } from './routes.js';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export interface ClusterConfig {
  readonly name: string;
  /** `sha256:<64 hex>` digests, or plain tokens (dev only). */
  readonly tokens: readonly string[];
}

export interface HttpOptions {
  /** Time from sending the request to the target's final response head; 504 after it. */
  readonly responseTimeoutMs: number;
  /** The client must send its whole request head within this (slow-loris). */
  readonly headersTimeoutMs: number;
  /** The client must send its whole request, body included, within this; 0 turns it off. */
  readonly requestTimeoutMs: number;
  /** How long an idle keep-alive client connection is kept. */
  readonly keepAliveTimeoutMs: number;
  /** Largest request head, in bytes. */
  readonly maxHeaderBytes: number;
  /** Most header fields in one request. */
  readonly maxHeaders: number;
  /** This hop's pseudonym in Via, and the loop-detection key. */
  readonly via: string;
}

export interface ControllerConfig {
  readonly listen: HostPort;
  /** Transport URL agents dial: tcp://, tls://, ws:// or wss://. */
  readonly tunnelListen: string;
  /** PEM file paths, required for a tls:// or wss:// tunnel listener. */
  readonly tunnelCert?: string;
  readonly tunnelKey?: string;
  readonly adminListen: HostPort | null;
  readonly dataDir: string;
  readonly clusters: readonly ClusterConfig[];
  readonly routes: readonly Route[];
  readonly http: HttpOptions;
  readonly tunnel: SessionOptions;
  readonly logLevel: LogLevel;
}
