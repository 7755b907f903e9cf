// Which agents may connect (token → cluster) and which tunnels each cluster has up right now. Streams
// go to the live tunnel with the fewest open streams; a draining tunnel gets none (DESIGN §3). A tunnel
// that an agent redials replaces its stale predecessor at once, found by the agent's tunnel slot and
// told apart by its generation (docs/protocol.md §4, "Tunnel identity").
import { createHash } from 'node:crypto';
import { hashToken } from '../store/model.js';
import type { Session } from '../tunnel/session.js';
import type { TunnelSlotId } from '../tunnel/slot.js';
import type { ClusterConfig } from './config.js';

export interface Tunnel {
  readonly session: Session;
  readonly cluster: string;
  readonly agent: string;
  readonly replica: string;
  /** The agent's software version from its HELLO; absent for agents that do not send one. */
  readonly version?: string;
  /** Which of the agent's tunnels this is, and its dial count; absent when HELLO carried neither. */
  readonly slot?: TunnelSlotId;
  readonly since: number;
  /** `sha256:<hex>` of the token the agent authenticated with: revoking it closes this tunnel. */
  readonly tokenHash?: string;
  /** The agent's address as the tunnel listener saw it, `host:port`; a peer's URL for a peer tunnel. */
  readonly remote?: string;
  /**
   * Set on a session to a peer controller of the fleet (peers.ts), never in the registry: its instance
   * id. A stream opened on it carries its cluster in the open metadata.
   */
  readonly peer?: string;
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
  readonly #listeners: ((tunnel: Tunnel, op: 'add' | 'remove') => void)[] = [];
  /** The newest tunnel of each agent slot: cluster, agent, replica and slot index → tunnel. */
  readonly #bySlot = new Map<string, Tunnel>();

  /**
   * Adds `tunnel` to its cluster. When it is a newer generation of a slot that already has a tunnel,
   * that older tunnel leaves routing here and now and is returned: the agent dialed again because it
   * gave the old one up, so it is stale even if this side has not noticed yet. The caller closes it.
   * A tunnel of an older generation than the registered one (a handshake that lost a race with its
   * own redial) is added without replacing anything; it ends by itself.
   */
  add(tunnel: Tunnel): Tunnel | undefined {
    let replaced: Tunnel | undefined;
    if (tunnel.slot !== undefined) {
      const key = slotKey(tunnel);
      const current = this.#bySlot.get(key);
      if (current === undefined || current.slot!.generation < tunnel.slot.generation) {
        this.#bySlot.set(key, tunnel);
        if (current !== undefined) {
          this.remove(current);
          replaced = current;
        }
      }
    }
    const list = this.#byCluster.get(tunnel.cluster);
    if (list === undefined) this.#byCluster.set(tunnel.cluster, [tunnel]);
    else list.push(tunnel);
    this.#changed(tunnel, 'add');
    return replaced;
  }

  /** Calls `listener` after every tunnel added or removed (fleet presence, waiting requests). */
  onChange(listener: (tunnel: Tunnel, op: 'add' | 'remove') => void): void {
    this.#listeners.push(listener);
  }

  #changed(tunnel: Tunnel, op: 'add' | 'remove'): void {
    for (const listener of this.#listeners) listener(tunnel, op);
  }

  remove(tunnel: Tunnel): void {
    if (tunnel.slot !== undefined) {
      const key = slotKey(tunnel);
      if (this.#bySlot.get(key) === tunnel) this.#bySlot.delete(key);
    }
    const list = this.#byCluster.get(tunnel.cluster);
    if (list === undefined) return;
    const i = list.indexOf(tunnel);
    if (i === -1) return;
    list.splice(i, 1);
    if (list.length === 0) this.#byCluster.delete(tunnel.cluster);
    this.#changed(tunnel, 'remove');
  }

  /** Cluster name → tunnels held (draining ones too), for fleet presence. */
  counts(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const [cluster, list] of this.#byCluster) counts[cluster] = list.length;
    return counts;
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

  /**
   * Why pick() found no tunnel for `cluster`, for the 503 page: none is connected, or every one left is
   * draining (its agent is stopping, e.g. a lone agent's restart), counted by agent replica.
   */
  unavailableReason(cluster: string): string {
    const agents = new Set<string>();
    for (const tunnel of this.#byCluster.get(cluster) ?? []) {
      if (!tunnel.session.closed) agents.add(JSON.stringify([tunnel.agent, tunnel.replica]));
    }
    if (agents.size === 0) return `no agent of cluster ${cluster} is connected`;
    if (agents.size === 1) return `the only agent of cluster ${cluster} is draining`;
    return `all ${agents.size} agents of cluster ${cluster} are draining`;
  }

  count(cluster: string): number {
    return this.#byCluster.get(cluster)?.length ?? 0;
  }

  /** Entries held, for leak checks: tunnels listed and slots keyed (equal unless a stale one lingers). */
  size(): { tunnels: number; slots: number } {
    let tunnels = 0;
    for (const list of this.#byCluster.values()) tunnels += list.length;
    return { tunnels, slots: this.#bySlot.size };
  }
}

function slotKey(tunnel: Tunnel): string {
  // JSON keeps the parts apart whatever characters an agent puts in its name.
  return JSON.stringify([tunnel.cluster, tunnel.agent, tunnel.replica, tunnel.slot!.index]);
}
