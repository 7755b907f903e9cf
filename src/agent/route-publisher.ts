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
import type { Logger } from 'pino';
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

  /** Resolves once every send queued so far has finished (for a clean stop and for tests). */
  idle(): Promise<void> {
    return this.#tail;
  }

  close(): void {
    this.#closed = true;
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
    const routes = this.#source.routes;
    let reply: RoutesReply;
    try {
      reply = await exchange(session, encodeRouteSnapshot(routes));
    } catch (err) {
      this.stats.failures++;
      this.#log.warn(
        { event: 'discovery-send-failed', session: session.id, err: (err as Error).message },
        'route snapshot not delivered; the next snapshot or tunnel sends it again',
      );
      return;
    }
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
