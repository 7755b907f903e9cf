// Which agents may connect (token → cluster) and which tunnels each cluster has up right now. Streams
// go to the live tunnel with the fewest open streams; a draining tunnel gets none (DESIGN §3).
import { createHash } from 'node:crypto';
import type { Session } from '../tunnel/session.js';
import type { ClusterConfig } from './config.js';

export interface Tunnel {
  readonly session: Session;
  readonly cluster: string;
  readonly agent: string;
  readonly replica: string;
  readonly since: number;
}

/** `sha256:<hex>` of a token, the form configs and stores keep. */
export function hashToken(token: string): string {
  return `sha256:${createHash('sha256').update(token, 'utf8').digest('hex')}`;
}

export class TokenIndex {
  /** sha256 digest (raw bytes, hex key) → cluster name. */
  readonly #byDigest = new Map<string, string>();

  constructor(clusters: readonly ClusterConfig[]) {
    for (const cluster of clusters) {
      for (const token of cluster.tokens) {
        const hashed = token.startsWith('sha256:') ? token : hashToken(token);
        this.#byDigest.set(hashed.slice('sha256:'.length).toLowerCase(), cluster.name);
      }
    }
  }

  /** The cluster a presented token belongs to, if any. */
  clusterFor(token: string): string | undefined {
    // The lookup compares digests, never the secrets: timing can only reveal how much of a SHA-256
    // digest matched, and an attacker cannot steer a digest towards a stored one.
    return this.#byDigest.get(createHash('sha256').update(token, 'utf8').digest('hex'));
  }
}

export class TunnelRegistry {
  readonly #byCluster = new Map<string, Tunnel[]>();

  add(tunnel: Tunnel): void {
    const list = this.#byCluster.get(tunnel.cluster);
    if (list === undefined) this.#byCluster.set(tunnel.cluster, [tunnel]);
    else list.push(tunnel);
  }

  remove(tunnel: Tunnel): void {
    const list = this.#byCluster.get(tunnel.cluster);
    if (list === undefined) return;
    const i = list.indexOf(tunnel);
    if (i !== -1) list.splice(i, 1);
    if (list.length === 0) this.#byCluster.delete(tunnel.cluster);
  }

  /**
   * The live tunnel of `cluster` with the fewest open streams, skipping draining ones and those in
   * `exclude` (tunnels a request already failed on). Ties go to the tunnel listed first.
   */
  pick(cluster: string, exclude?: ReadonlySet<Tunnel>): Tunnel | undefined {
    let best: Tunnel | undefined;
    for (const tunnel of this.#byCluster.get(cluster) ?? []) {
      const s = tunnel.session;
      if (s.closed || s.draining || exclude?.has(tunnel)) continue;
      if (best === undefined || s.streamCount < best.session.streamCount) best = tunnel;
    }
    return best;
  }

  /** Every tunnel, for status and shutdown. */
  all(): Tunnel[] {
    return [...this.#byCluster.values()].flat();
  }

  count(cluster: string): number {
    return this.#byCluster.get(cluster)?.length ?? 0;
  }
}
