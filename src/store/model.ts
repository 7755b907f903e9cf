// The records the controller's state is made of, and the digest a token is kept as, shared by the store
// that keeps them and the controller code that validates and serves them. A leaf: it imports no Sluice
// module, so neither the store nor the config loader reaches into the controller's runtime for them.
import { createHash } from 'node:crypto';

export interface Route {
  /** An exact hostname (`app.example.test`) or a wildcard (`*.example.test`), lowercase. */
  host: string;
  /** A path prefix matched on segment boundaries. `/` (the default) matches every path. */
  path?: string;
  cluster: string;
  /** Where the agent sends the stream: `http://host:port`, normalized, always with a port. */
  target: string;
}

/** `sha256:<hex>` of a token, the form configs and stores keep. */
export function hashToken(token: string): string {
  return `sha256:${createHash('sha256').update(token, 'utf8').digest('hex')}`;
}
