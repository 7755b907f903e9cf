// The records the controller's state is made of, the digest a token is kept as, and where the store
// lives, shared by the store that keeps them and the controller code that validates and serves them.
// A leaf: it imports only the config leaf's value types, so neither the store nor the config loader
// reaches into the controller's runtime for them.
import { createHash } from 'node:crypto';
import type { HostPort } from '../config/values.js';

export interface Route {
  /** An exact hostname (`app.example.test`) or a wildcard (`*.example.test`), lowercase. */
  host: string;
  /** A path prefix matched on segment boundaries. `/` (the default) matches every path. */
  path?: string;
  cluster: string;
  /**
   * Where the agent sends the stream: `http://`, `https://` or `h2c://host:port`, normalized, always
   * with a port.
   */
  target: string;
  /** For an `https://` target: the name sent as SNI and checked in its certificate (default its host). */
  serverName?: string;
  /**
   * `passthrough`: the TLS listener reads the SNI name of a connection for this host and relays its
   * bytes, still encrypted, to a `tcp://host:port` target; the customer's certificate answers. Such a
   * route serves no HTTP request.
   */
  tls?: 'passthrough';
}

/** `sha256:<hex>` of a token, the form configs and stores keep. */
export function hashToken(token: string): string {
  return `sha256:${createHash('sha256').update(token, 'utf8').digest('hex')}`;
}

/**
 * Where the controller keeps its state: SQLite in the data dir (one controller), or Redis, which a
 * fleet of controllers shares (docs/fleet.md). `url` is as typed, credentials included; it is masked
 * when the config is serialized.
 */
export type StoreLocation =
  | { readonly kind: 'sqlite' }
  | { readonly kind: 'redis'; readonly url: string }
  | {
      readonly kind: 'sentinel';
      readonly url: string;
      /** host:port of each Sentinel. */
      readonly sentinels: readonly HostPort[];
      /** The monitored master's name. */
      readonly name: string;
      readonly db: number;
      /** `rediss+sentinel://`: TLS to the Sentinels and to the master. */
      readonly tls: boolean;
    };
