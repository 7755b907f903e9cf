// Peer forwarding in a fleet (docs/fleet.md): a controller with no tunnel of its own for a cluster
// opens the stream on a session to a peer controller that holds one, and that peer relays it onto its
// local tunnel. Peers speak the tunnel protocol itself, authenticated with the fleet secret as the
// token, so every kind of exchange (plain requests, streamed bodies, SSE, WebSockets, any Upgrade) and
// its flow control cross the extra hop unchanged: the relay moves stream bytes, never HTTP.
//
// Each controller keeps PEER_SESSIONS sessions to every other controller in the presence view, dialed
// ahead of need, so choosing a peer never waits on a dial. A stream that arrives from a peer goes only
// to this controller's own tunnels, never to another peer: a loop cannot form.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { SluiceError } from '../errors.js';
import { ErrorCode } from '../protocol/constants.js';
import { dial } from '../transport/index.js';
import type { AuthResult, Hello } from '../tunnel/handshake.js';
import type { SessionOptions } from '../tunnel/options.js';
import { Session } from '../tunnel/session.js';
import type { Stream } from '../tunnel/stream.js';
import {
  type ClientGone,
  MAX_ATTEMPTS,
  type PeerStreamMeta,
  TUNNEL_WAIT_MS,
  type TunnelSource,
} from './dispatcher.js';
import { PRESENCE_TTL_MS, type PresenceRecord } from './presence.js';
import type { Tunnel, TunnelRegistry } from './tunnels.js';

/** Sessions kept to each peer: streams spread over them, and one can be redialed while the other serves. */
export const PEER_SESSIONS = 2;
/** The HELLO cap a peer controller sends, and the agent name it uses. */
export const PEER_CAP = 'peer';
const PEER_AGENT = 'sluice-controller';
/** Redial delays after a failed peer dial: doubling from the first to the last. */
const REDIAL_MIN_MS = 250;
const REDIAL_MAX_MS = 10_000;
/** After the peer refused the fleet secret: the secrets differ until an operator fixes one. */
const REFUSED_REDIAL_MS = 10_000;
/** Compares two secrets in constant time, over their digests. */
export function secretMatches(presented: string, expected: string): boolean {
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

interface PoolOptions {
  readonly selfId: string;
  readonly secret: string;
  readonly session: SessionOptions;
  readonly log: Logger;
  /** Called when a session to a peer opened or ended: a request waiting for a tunnel looks again. */
  readonly onChange: () => void;
}

/** The sessions this controller keeps to its peers, and the choice among them. */
export class PeerPool {
  readonly #options: PoolOptions;
  readonly #links = new Map<string, PeerLink>();
  #view: ReadonlyMap<string, PresenceRecord> = new Map();
  /** When each peer was last in a fresh view. */
  readonly #seenAt = new Map<string, number>();
  #closed = false;

  constructor(options: PoolOptions) {
    this.#options = options;
  }

  /**
   * Follows the presence view: dials peers that appeared, lets go of those that left or moved. A peer
   * missing from one view is kept for a presence TTL first: after a Redis restart every entry is gone
   * until its controller writes it again, and a view read in between must not tear down working
   * sessions (a dead peer's sessions close by themselves, and pick() skips them).
   */
  update(fresh: ReadonlyMap<string, PresenceRecord>): void {
    // A presence round that lands during shutdown must not dial peers no one will stop again.
    if (this.#closed) return;
    const now = Date.now();
    const view = new Map(fresh);
    for (const id of fresh.keys()) this.#seenAt.set(id, now);
    for (const [id, record] of this.#view) {
      const seen = this.#seenAt.get(id) ?? 0;
      if (!view.has(id) && now - seen < PRESENCE_TTL_MS) view.set(id, record);
      if (!view.has(id)) this.#seenAt.delete(id);
    }
    this.#view = view;
    for (const [id, link] of this.#links) {
      const record = view.get(id);
      if (record === undefined || record.advertise !== link.url) {
        this.#links.delete(id);
        link.stop();
      }
    }
    for (const [id, record] of view) {
      if (!this.#links.has(id)) this.#links.set(id, new PeerLink(id, record.advertise, this.#options));
    }
  }

  /**
   * A session to the least-loaded peer that holds a tunnel of `cluster` and is not draining: the one
   * whose sessions carry the fewest of our streams per tunnel it holds.
   */
  pick(cluster: string, exclude: ReadonlySet<Tunnel>): Tunnel | undefined {
    let best: Tunnel | undefined;
    let bestLoad = Infinity;
    for (const [id, record] of this.#view) {
      const tunnels = record.clusters[cluster];
      if (tunnels === undefined || tunnels === 0 || record.draining) continue;
      for (const tunnel of this.#links.get(id)?.tunnels() ?? []) {
        if (exclude.has(tunnel)) continue;
        const load = tunnel.session.streamCount / tunnels;
        if (load < bestLoad) {
          best = tunnel;
          bestLoad = load;
        }
      }
    }
    return best;
  }

  /** True when some peer's entry lists a tunnel of `cluster`, usable or not right now. */
  holds(cluster: string): boolean {
    for (const record of this.#view.values()) if (record.clusters[cluster] !== undefined) return true;
    return false;
  }

  /** Each peer, for /api/fleet: its id and how many of our sessions to it are up. */
  links(): { id: string; url: string; sessions: number; streams: number }[] {
    return [...this.#links.values()].map((link) => {
      const tunnels = link.tunnels();
      return {
        id: link.id,
        url: link.url,
        sessions: tunnels.length,
        streams: tunnels.reduce((n, t) => n + t.session.streamCount, 0),
      };
    });
  }

  /** Every live session to a peer (shutdown waits for their streams). */
  sessions(): Session[] {
    return [...this.#links.values()].flatMap((link) => link.tunnels().map((t) => t.session));
  }

  close(): void {
    this.#closed = true;
    for (const link of this.#links.values()) link.stop();
    this.#links.clear();
  }
}

/** The sessions to one peer, each redialed on its own while the peer is in the view. */
class PeerLink {
  readonly id: string;
  readonly url: string;
  readonly #options: PoolOptions;
  readonly #slots: (Tunnel | undefined)[] = new Array<Tunnel | undefined>(PEER_SESSIONS).fill(undefined);
  readonly #abort = new AbortController();
  readonly #log: Logger;

  constructor(id: string, url: string, options: PoolOptions) {
    this.id = id;
    this.url = url;
    this.#options = options;
    this.#log = options.log.child({ peer: id, url });
    for (let i = 0; i < PEER_SESSIONS; i++) void this.#run(i);
  }

  /** Its sessions that can take a stream now. */
  tunnels(): Tunnel[] {
    const live: Tunnel[] = [];
    for (const t of this.#slots)
      if (t !== undefined && !t.session.closed && !t.session.draining) live.push(t);
    return live;
  }

  /** Stops redialing; open sessions drain (GO_AWAY) and end once their streams are done. */
  stop(): void {
    this.#abort.abort();
    for (const t of this.#slots) if (t !== undefined) void t.session.close();
  }

  async #run(index: number): Promise<void> {
    const signal = this.#abort.signal;
    let delay = REDIAL_MIN_MS;
    let failures = 0;
    while (!signal.aborted) {
      try {
        const session = await this.#connect(signal);
        failures = 0;
        delay = REDIAL_MIN_MS;
        const tunnel: Tunnel = {
          session,
          cluster: '',
          agent: PEER_AGENT,
          replica: this.id,
          since: Date.now(),
          remote: this.url,
          peer: this.id,
        };
        this.#slots[index] = tunnel;
        if (index === 0) this.#log.info({ event: 'peer-connected' }, 'connected to peer controller');
        this.#options.onChange();
        await ended(session, signal);
        this.#slots[index] = undefined;
        this.#options.onChange();
        if (signal.aborted) return;
      } catch (err) {
        if (signal.aborted) return;
        failures += 1;
        const code = err instanceof SluiceError ? err.code : (err as NodeJS.ErrnoException).code;
        if (code === 'SLUICE_ERR_UNAUTHORIZED' || code === 'SLUICE_ERR_FORBIDDEN') {
          // Logged on every attempt of slot 0: a wrong secret is an outage of the fleet's forwarding.
          if (index === 0) {
            this.#log.error(
              { event: 'peer-refused', code, err: (err as Error).message },
              'peer controller refused the fleet secret: SLUICE_PEER_SECRET differs between controllers',
            );
          }
          delay = REFUSED_REDIAL_MS;
        } else {
          if (index === 0 && (failures === 1 || failures % 20 === 0)) {
            this.#log.warn(
              { event: 'peer-dial-failed', code, err: (err as Error).message, failures },
              'could not reach peer controller',
            );
          }
          delay = Math.min(delay * 2, REDIAL_MAX_MS);
        }
      }
      await sleep(delay, signal);
    }
  }

  async #connect(signal: AbortSignal): Promise<Session> {
    const { secret, selfId, session } = this.#options;
    const transport = await dial({ url: this.url, signal });
    return Session.connect(transport, {
      hello: { token: secret, agent: PEER_AGENT, replica: selfId, caps: [PEER_CAP] },
      options: session,
      logger: this.#log,
    });
  }
}

interface AcceptorOptions {
  readonly selfId: string;
  readonly secret: string;
  readonly session: SessionOptions;
  /** This controller's own tunnels: the only place a peer's stream may go. */
  readonly registry: TunnelRegistry;
  /** Counts a stream `peer` sent here: relayed to a local tunnel, or refused. */
  readonly onReceived: (peer: string, relayed: boolean) => void;
  readonly log: Logger;
}

/** The peer listener's side: sessions from other controllers, whose streams go to local tunnels. */
export class PeerAcceptor {
  readonly #options: AcceptorOptions;
  readonly #sessions = new Set<Session>();
  #relays = 0;
  #idle: (() => void)[] = [];
  #stopping = false;

  constructor(options: AcceptorOptions) {
    this.#options = options;
  }

  /** Streams from peers being relayed right now. */
  get inFlight(): number {
    return this.#relays;
  }

  /** Resolves once no relayed stream is left. */
  whenIdle(): Promise<void> {
    if (this.#relays === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  accept(transport: Duplex, remote: string): void {
    const { log, session: options, secret } = this.#options;
    let from = remote;
    Session.accept(transport, {
      options,
      logger: log.child({ remote }),
      authenticate: (hello: Hello): AuthResult => {
        from = hello.replica;
        if (!hello.caps.includes(PEER_CAP) || !secretMatches(hello.token, secret)) {
          log.warn(
            { event: 'peer-refused', remote, peer: hello.replica },
            'refused a peer session: wrong fleet secret (SLUICE_PEER_SECRET differs between controllers)',
          );
          return { ok: false, code: 'UNAUTHORIZED', reason: 'wrong fleet secret' };
        }
        if (this.#stopping) return { ok: false, code: 'OVERLOAD', reason: 'the controller is stopping' };
        return { ok: true };
      },
      onStream: (stream) => this.#relay(stream, from),
    }).then(
      (session) => {
        this.#sessions.add(session);
        session.once('close', () => this.#sessions.delete(session));
        if (this.#stopping) void session.close();
      },
      (err: Error) => log.debug({ remote, err: err.message }, 'peer handshake failed'),
    );
  }

  /** Sends GO_AWAY to every peer session: peers open no new streams here; the ones open finish. */
  drain(graceMs: number): Promise<unknown> {
    this.#stopping = true;
    return Promise.allSettled([...this.#sessions].map((s) => s.close(graceMs)));
  }

  /** Cuts what is left. */
  destroy(err: Error): void {
    for (const session of this.#sessions) session.destroy(err);
  }

  /** Sends a peer's stream on to a local tunnel of its cluster, or refuses it unprocessed. */
  #relay(inbound: Stream, peer: string): void {
    const { registry, onReceived, selfId } = this.#options;
    const meta = inbound.meta as Partial<PeerStreamMeta>;
    if (typeof meta.cluster !== 'string' || typeof meta.forwarded !== 'object' || meta.forwarded === null) {
      onReceived(peer, false);
      inbound.reset(ErrorCode.PROTOCOL_ERROR, 'a peer stream needs cluster and forwarded metadata');
      return;
    }
    const exclude = new Set<Tunnel>();
    let outbound: Stream | undefined;
    while (outbound === undefined && exclude.size < MAX_ATTEMPTS) {
      const tunnel = registry.pick(meta.cluster, exclude);
      if (tunnel === undefined) break;
      exclude.add(tunnel);
      try {
        outbound = tunnel.session.open(meta.forwarded);
      } catch {
        // Closed, draining or at a limit since it was chosen: the next one.
      }
    }
    if (outbound === undefined) {
      onReceived(peer, false);
      inbound.reset(
        ErrorCode.REFUSED_STREAM,
        `controller ${selfId} holds no usable tunnel of ${meta.cluster}`,
      );
      return;
    }
    onReceived(peer, true);
    this.#relays += 1;
    splice(inbound, outbound, () => {
      this.#relays -= 1;
      if (this.#relays === 0) for (const resolve of this.#idle.splice(0)) resolve();
    });
  }
}

/**
 * Joins two streams: bytes each way with backpressure, each FIN passed on, and a reset of either
 * passed to the other with its wire code, so the far ends see what they would see directly.
 */
export function splice(a: Stream, b: Stream, done: () => void): void {
  a.pipe(b);
  b.pipe(a);
  let open = 2;
  const onClose = (self: Stream, other: Stream) => () => {
    if (!(self.readableEnded && self.writableFinished) && !other.destroyed) {
      const err = self.errored;
      if (err instanceof SluiceError && err.wireCode !== undefined) {
        other.reset(err.wireCode, (err as { reason?: string }).reason ?? '');
      } else {
        other.reset(ErrorCode.CANCEL, 'the other hop of the stream ended');
      }
    }
    if (--open === 0) done();
  };
  // Errors are handled through `close`: the error is on `errored`.
  a.on('error', () => {});
  b.on('error', () => {});
  a.once('close', onClose(a, b));
  b.once('close', onClose(b, a));
}

/**
 * Tunnels for a fleet's dispatcher: this controller's own first, then a peer that holds one. A
 * request for a cluster whose tunnels are moving (one was lost or drained here lately, or a peer's
 * entry lists the cluster but cannot take it: draining, unreachable, just died) waits for them to land,
 * up to TUNNEL_WAIT_MS, instead of failing during a rolling restart.
 */
export class FleetSource implements TunnelSource {
  readonly #registry: TunnelRegistry;
  readonly #peers: PeerPool;
  #waiters: (() => void)[] = [];
  /** Cluster → when this controller last lost one of its tunnels: they are likely landing elsewhere. */
  readonly #lost = new Map<string, number>();

  constructor(registry: TunnelRegistry, peers: PeerPool) {
    this.#registry = registry;
    this.#peers = peers;
    registry.onChange((tunnel, op) => {
      if (op === 'remove') this.#lost.set(tunnel.cluster, Date.now());
      this.changed();
    });
  }

  /**
   * What this controller's presence entry lists: its tunnels by cluster, and clusters it lost a tunnel
   * of lately with 0, so that peers wait for those tunnels to land rather than fail at once.
   */
  presenceCounts(): Record<string, number> {
    const counts = this.#registry.counts();
    const since = Date.now() - TUNNEL_WAIT_MS;
    for (const [cluster, at] of this.#lost) {
      if (at < since) this.#lost.delete(cluster);
      else counts[cluster] ??= 0;
    }
    return counts;
  }

  pick(cluster: string, exclude: ReadonlySet<Tunnel>): Tunnel | undefined {
    return this.#registry.pick(cluster, exclude) ?? this.#peers.pick(cluster, exclude);
  }

  unavailableReason(cluster: string): string {
    if (this.#registry.count(cluster) === 0 && this.#peers.holds(cluster)) {
      return `no controller holding a tunnel of cluster ${cluster} can take the request`;
    }
    return this.#registry.unavailableReason(cluster);
  }

  /** Something changed (a tunnel here, a peer session, the presence view): waiting requests look again. */
  changed(): void {
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /**
   * Resolves true at the next change while tunnels of `cluster` are expected to land before
   * `deadline`; false at once when none are expected, and at the deadline.
   */
  waitForTunnel(cluster: string, deadline: number, gone?: ClientGone): Promise<boolean> {
    const left = deadline - Date.now();
    if (left <= 0 || !this.#expects(cluster)) return Promise.resolve(false);
    return new Promise((resolve) => {
      let stopListening = (): void => {};
      const end = (found: boolean): void => {
        clearTimeout(timer);
        stopListening();
        const i = this.#waiters.indexOf(wake);
        if (i !== -1) this.#waiters.splice(i, 1);
        resolve(found);
      };
      const timer = setTimeout(() => end(false), left);
      const wake = (): void => end(true);
      this.#waiters.push(wake);
      // A client that leaves ends its wait at once: nothing holds its request for the rest of it.
      if (gone !== undefined) stopListening = gone(() => end(false));
    });
  }

  #expects(cluster: string): boolean {
    if (this.#peers.holds(cluster)) return true;
    const lost = this.#lost.get(cluster);
    if (lost !== undefined && lost > Date.now() - TUNNEL_WAIT_MS) return true;
    return this.#registry
      .all()
      .some((t) => t.cluster === cluster && t.session.goAwaySent && !t.session.closed);
  }
}

function ended(session: Session, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (session.closed) return resolve();
    const onAbort = (): void => resolve();
    session.once('close', () => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    });
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
