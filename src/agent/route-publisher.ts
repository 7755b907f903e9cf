// Sends the agent's discovered routes to the controller (docs/kubernetes.md, "Discovery"): each
// snapshot on one tunnel, and the current one again on each tunnel that comes up, so that a controller
// that restarted, or another of a fleet, learns it without waiting for the cluster to change. One
// control stream per snapshot (docs/protocol.md §12): the snapshot's JSON one way, the controller's
// reply the other. The reply names the routes refused (a host the cluster may not claim, or one another
// route holds), which are logged here once each, and the public address that goes into the status of
// every Ingress whose routes were all taken; a refused Ingress's status is left alone.
//
// Sends never overlap: each waits for the one before, and sends the snapshot current when it starts, so
// the controller never gets an older snapshot after a newer one from this agent.
//
// A send that fails (the controller's store was away, the stream was reset, the reply was bad) is tried
// again on the same tunnel with a capped backoff, until one goes through or a newer send replaces it:
// otherwise the controller would keep the routes from before the failure until the cluster next changed,
// serving an Ingress already deleted or missing one just made. A controller that refuses the stream
// (REFUSED_STREAM: one older than route discovery) is not asked again on that tunnel.
import type { Logger } from 'pino';
import { StreamResetError } from '../errors.js';
import { ErrorCode } from '../protocol/constants.js';
import {
  CONTROL_ROUTES_META,
  decodeRoutesReply,
  encodeRouteSnapshot,
  MAX_REPLY_BYTES,
  readMessage,
  type RoutesReply,
  type RouteSnapshot,
} from '../protocol/route-snapshot.js';
import type { Session } from '../tunnel/session.js';

/** The controller's reply must come within this; a longer wait resets the stream. */
const REPLY_TIMEOUT_MS = 30_000;

/** The wait before a failed send is tried again: doubling from the first, never over the cap. */
export const RETRY = { firstMs: 1_000, maxMs: 30_000 } as const;

/** What the publisher needs of discovery (agent/discovery.ts). */
export interface RouteSource {
  readonly routes: RouteSnapshot;
  writeStatus(object: string, address: string): Promise<boolean>;
}

export interface PublisherStats {
  /** Snapshots the controller answered. */
  sent: number;
  /** Sends that failed: the stream reset, the tunnel closed, or a malformed reply. */
  failures: number;
  /** Routes the controller refused, each counted when it first appears. */
  refused: number;
  /** Ingress statuses written. */
  statusWrites: number;
}

export class RoutePublisher {
  readonly stats: PublisherStats = { sent: 0, failures: 0, refused: 0, statusWrites: 0 };
  readonly #source: RouteSource;
  readonly #sessions: () => Iterable<Session>;
  readonly #log: Logger;
  #tail: Promise<void> = Promise.resolve();
  /** A send to any tunnel is queued and has not started: a new snapshot joins it. */
  #anyQueued = false;
  #refused = new Set<string>();
  #hasSnapshot = false;
  #closed = false;
  /** Per tunnel, the retry of its last failed send, and how many failed in a row. */
  readonly #retries = new Map<Session, { timer: NodeJS.Timeout | null; failed: number }>();

  constructor(source: RouteSource, sessions: () => Iterable<Session>, logger: Logger) {
    this.#source = source;
    this.#sessions = sessions;
    this.#log = logger.child({ component: 'discovery' });
  }

  /** Discovery emitted a snapshot: it goes out on one tunnel. */
  snapshot(): void {
    this.#hasSnapshot = true;
    if (this.#anyQueued) return;
    this.#anyQueued = true;
    this.#queue(() => {
      this.#anyQueued = false;
      return this.#send(undefined);
    });
  }

  /** A tunnel came up: it gets the current snapshot, once there is one. */
  tunnelUp(session: Session): void {
    if (this.#hasSnapshot) this.#queue(() => this.#send(session));
  }

  /** Tunnels whose last send failed and that wait to be sent the snapshot again. */
  get retrying(): number {
    let n = 0;
    for (const retry of this.#retries.values()) if (retry.timer !== null) n++;
    return n;
  }

  /** Resolves once every send queued so far has finished (for a clean stop and for tests). */
  idle(): Promise<void> {
    return this.#tail;
  }

  close(): void {
    this.#closed = true;
    for (const retry of this.#retries.values()) if (retry.timer !== null) clearTimeout(retry.timer);
    this.#retries.clear();
  }

  #queue(run: () => Promise<void>): void {
    this.#tail = this.#tail.then(run).catch((err: unknown) => {
      this.#log.error({ event: 'discovery-publish-failed', err: String(err) }, 'route publishing failed');
    });
  }

  async #send(wanted: Session | undefined): Promise<void> {
    if (this.#closed) return;
    const session = usable(wanted) ? wanted : [...this.#sessions()].find(usable);
    // None up: the next tunnel to come up gets the snapshot.
    if (session === undefined) return;
    // This send carries the current snapshot: a retry still waiting for this tunnel has nothing to add.
    const retry = this.#retries.get(session);
    if (retry?.timer != null) {
      clearTimeout(retry.timer);
      retry.timer = null;
    }
    const routes = this.#source.routes;
    let reply: RoutesReply;
    try {
      reply = await exchange(session, encodeRouteSnapshot(routes));
    } catch (err) {
      this.stats.failures++;
      this.#failed(session, err as Error);
      return;
    }
    this.#retries.delete(session);
    this.stats.sent++;
    this.#log.info(
      {
        event: 'discovery-sent',
        session: session.id,
        routes: routes.length,
        stored: reply.stored,
        refused: reply.refused.length,
      },
      'route snapshot sent',
    );
    this.#reportRefused(reply);
    await this.#writeStatuses(routes, reply);
  }

  #failed(session: Session, err: Error): void {
    const refused = err instanceof StreamResetError && err.wireCode === ErrorCode.REFUSED_STREAM;
    if (refused || this.#closed || !usable(session)) {
      this.#retries.delete(session);
      this.#log.warn(
        { event: 'discovery-send-failed', session: session.id, err: err.message },
        refused
          ? 'the controller takes no route snapshots (older than route discovery?); the next tunnel asks again'
          : 'route snapshot not delivered; the next tunnel sends it again',
      );
      return;
    }
    const retry = this.#retries.get(session) ?? { timer: null, failed: 0 };
    retry.failed += 1;
    const retryInMs = Math.min(RETRY.firstMs * 2 ** (retry.failed - 1), RETRY.maxMs);
    this.#log.warn(
      { event: 'discovery-send-failed', session: session.id, err: err.message, retryInMs },
      'route snapshot not delivered; sending it again',
    );
    retry.timer = setTimeout(() => {
      retry.timer = null;
      if (usable(session)) this.#queue(() => this.#send(session));
      else this.#retries.delete(session);
    }, retryInMs);
    // A stopping agent is not held up by a retry (close() clears it too).
    retry.timer.unref();
    this.#retries.set(session, retry);
  }

  #reportRefused(reply: RoutesReply): void {
    const now = new Set<string>();
    for (const r of reply.refused) {
      const key = JSON.stringify([r.host, r.path, r.object, r.reason]);
      now.add(key);
      if (this.#refused.has(key)) continue;
      this.stats.refused++;
      this.#log.warn(
        { event: 'discovery-refused', host: r.host, path: r.path, object: r.object, reason: r.reason },
        'the controller refused a discovered route; its Ingress status is left alone',
      );
    }
    this.#refused = now;
  }

  async #writeStatuses(routes: RouteSnapshot, reply: RoutesReply): Promise<void> {
    const { address } = reply;
    if (address === undefined) return;
    const refused = new Set(reply.refused.map((r) => r.object));
    const ingresses = new Set(routes.filter((r) => r.source === 'ingress').map((r) => r.object));
    for (const object of ingresses) {
      if (this.#closed) return;
      if (refused.has(`ingress ${object}`)) continue;
      try {
        if (await this.#source.writeStatus(object, address)) this.stats.statusWrites++;
      } catch (err) {
        this.#log.warn(
          { event: 'discovery-status-failed', object: `ingress ${object}`, err: (err as Error).message },
          'ingress status not written',
        );
      }
    }
  }
}

function usable(session: Session | undefined): session is Session {
  return session !== undefined && !session.closed && !session.draining;
}

/** One snapshot out and its reply back, on a control stream of its own. */
async function exchange(session: Session, snapshot: string): Promise<RoutesReply> {
  const stream = session.open({ ...CONTROL_ROUTES_META });
  // A failure shows in readMessage; without a listener an 'error' would be thrown.
  stream.on('error', () => {});
  stream.end(snapshot);
  const timer = setTimeout(
    () => stream.reset(ErrorCode.CANCEL, 'no reply to the route snapshot'),
    REPLY_TIMEOUT_MS,
  );
  try {
    const body = await readMessage(stream, MAX_REPLY_BYTES);
    const decoded = decodeRoutesReply(body.toString('utf8'));
    if (!decoded.ok) throw new Error(decoded.reason);
    return decoded.reply;
  } catch (err) {
    if (!stream.destroyed) stream.reset(ErrorCode.CANCEL, 'route snapshot abandoned');
    throw err;
  } finally {
    clearTimeout(timer);
  }
}
