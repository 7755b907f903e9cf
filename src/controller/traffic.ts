// What the public edge served lately, for the dashboard (GET /api/traffic): the last requests, and per
// route how many requests finished in a short window and how many of them went wrong.
//
// Memory is bounded and recording is O(1). The last RECENT_REQUESTS requests sit in a fixed ring that
// keeps the edge's own RequestDone objects, so recording one allocates nothing. Rates are counted in
// one-second buckets, a ring of RATE_WINDOW_S per route, created on a route's first request in the
// window. A route whose buckets all fell out of the window is dropped, so a deleted route (or one
// without traffic) holds nothing, and there are never more counters than routes that saw a request in
// the last RATE_WINDOW_S seconds. Requests that matched no route (404, or refused before routing: 400,
// 431) are counted on one line of their own.
//
// TCP routes and passthrough hosts are shown apart (`tcpRoutes`): their counts are totals since the
// route was added, kept by the route's own connections (tcp-connections.ts), so a removed route takes
// its counts with it. The last RECENT_CONNECTIONS finished TCP and passthrough connections sit in a
// second fixed ring, as the requests do.
import type { Route } from '../store/model.js';
import type { RequestDone } from './edge.js';
import type { ConnectionKind, ConnectionTotals, TcpConnectionDone } from './tcp-connections.js';

/** How many finished requests the ring keeps. */
export const RECENT_REQUESTS = 100;
/** How many finished TCP and passthrough connections the second ring keeps. */
export const RECENT_CONNECTIONS = 100;
/** The window of the rates, in seconds (one bucket per second). */
export const RATE_WINDOW_S = 10;
/** Hosts are shown up to this many characters: the Host header is the client's, up to 16 KiB. */
export const MAX_SHOWN_HOST = 256;

/** Counts over the window. */
export interface Rates {
  /** Requests that finished in the window. */
  requests: number;
  /** `requests` divided by the seconds the window covers (less while the recorder is younger). */
  perSecond: number;
  /** Of those, the ones answered with a 5xx status (Sluice's own 502, 503, 504, 508 included). */
  errors5xx: number;
  /**
   * Of those, the ones whose answer failed: broken off after it began, or never sent though the client
   * waited for it (a client that went away first is not counted).
   */
  failed: number;
}

/** A route of the table with its rates. */
export interface RouteTraffic extends Rates {
  host: string;
  path: string;
  cluster: string;
  target: string;
}

/** One finished request, as the dashboard shows it. Absent fields are null, so the shape is fixed. */
export interface RecentRequest {
  /** When it arrived (ISO 8601). */
  at: string;
  requestId: string;
  kind: 'http' | 'upgrade';
  method: string;
  host: string;
  path: string;
  route: string | null;
  cluster: string | null;
  /** 0 when no status was sent. */
  status: number;
  ms: number;
  bytesIn: number;
  bytesOut: number;
  outcome: string | null;
  reason: string | null;
}

/** A TCP route or a passthrough host, with its counts since it was added. */
export interface TcpRouteTraffic extends ConnectionTotals {
  kind: ConnectionKind;
  /** The TCP route's bound listen address, or the passthrough route's host. */
  route: string;
  cluster: string;
  target: string;
}

/** One finished (or refused) TCP or passthrough connection, as the dashboard shows it. */
export interface RecentConnection {
  /** When it was accepted (ISO 8601). */
  at: string;
  kind: ConnectionKind;
  client: string;
  route: string;
  cluster: string;
  target: string;
  ms: number;
  bytesIn: number;
  bytesOut: number;
  /** As in the connection's log line (docs/tcp.md); `over_limit` for one turned away. */
  outcome: string;
}

export interface TrafficSnapshot {
  windowSeconds: number;
  /** HTTP routes only: passthrough routes are in `tcpRoutes`. */
  routes: RouteTraffic[];
  /** Requests that matched no route. */
  unrouted: Rates;
  /** Newest first. */
  requests: RecentRequest[];
  /** TCP routes, then passthrough hosts. */
  tcpRoutes: TcpRouteTraffic[];
  /** Newest first. */
  connections: RecentConnection[];
}

/** The key a finished request names its route by: the host, then the path prefix unless it is `/`. */
export function routeKey(route: Pick<Route, 'host' | 'path'>): string {
  // As PublicEdge writes `route` in its log line and in RequestDone.
  return route.path === undefined || route.path === '/' ? route.host : `${route.host}${route.path}`;
}

/** True for an answer that failed without (or besides) a 5xx status: see Rates.failed. */
export function answerFailed(done: Pick<RequestDone, 'status' | 'outcome'>): boolean {
  return done.outcome === 'broken' || (done.status === 0 && done.outcome !== 'client-aborted');
}

/** One route's counts: a ring of one-second buckets, each tagged with the second it holds. */
class Buckets {
  readonly #second = new Float64Array(RATE_WINDOW_S).fill(-Infinity);
  readonly #requests = new Uint32Array(RATE_WINDOW_S);
  readonly #errors5xx = new Uint32Array(RATE_WINDOW_S);
  readonly #failed = new Uint32Array(RATE_WINDOW_S);
  /** The newest second counted. */
  latest = -Infinity;

  add(second: number, is5xx: boolean, failed: boolean): void {
    const i = second % RATE_WINDOW_S;
    if (this.#second[i] !== second) {
      // The bucket held a second that has left the window: reuse it.
      this.#second[i] = second;
      this.#requests[i] = 0;
      this.#errors5xx[i] = 0;
      this.#failed[i] = 0;
    }
    this.#requests[i]!++;
    if (is5xx) this.#errors5xx[i]!++;
    if (failed) this.#failed[i]!++;
    if (second > this.latest) this.latest = second;
  }

  /** Sums the buckets of the seconds `now - RATE_WINDOW_S + 1` to `now`, over `spanS` seconds. */
  rates(now: number, spanS: number): Rates {
    let requests = 0;
    let errors5xx = 0;
    let failed = 0;
    for (let i = 0; i < RATE_WINDOW_S; i++) {
      const second = this.#second[i]!;
      if (second > now - RATE_WINDOW_S && second <= now) {
        requests += this.#requests[i]!;
        errors5xx += this.#errors5xx[i]!;
        failed += this.#failed[i]!;
      }
    }
    return { requests, perSecond: Math.round((requests / spanS) * 1000) / 1000, errors5xx, failed };
  }
}

const NO_TRAFFIC: Readonly<Rates> = Object.freeze({ requests: 0, perSecond: 0, errors5xx: 0, failed: 0 });

export class Traffic {
  readonly #recent: (RequestDone | undefined)[] = new Array<RequestDone | undefined>(RECENT_REQUESTS);
  /** Where the next request goes in #recent. */
  #next = 0;
  readonly #connections: (TcpConnectionDone | undefined)[] = new Array<TcpConnectionDone | undefined>(
    RECENT_CONNECTIONS,
  );
  #nextConnection = 0;
  readonly #byRoute = new Map<string, Buckets>();
  readonly #unrouted = new Buckets();
  readonly #now: () => number;
  readonly #started: number;

  /** `now` is a monotonic clock in ms (injectable for tests); wall-clock jumps do not skew rates. */
  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
    this.#started = now();
  }

  /** Counts a finished request. For EdgeOptions.onRequestDone. */
  record(done: RequestDone): void {
    this.#recent[this.#next] = done;
    this.#next = (this.#next + 1) % RECENT_REQUESTS;
    const second = Math.floor(this.#now() / 1000);
    let buckets = this.#unrouted;
    if (done.route !== undefined) {
      const found = this.#byRoute.get(done.route);
      if (found === undefined) {
        // A new key is rare (once per route per quiet window): the time to drop the stale ones.
        this.#sweep(second);
        buckets = new Buckets();
        this.#byRoute.set(done.route, buckets);
      } else {
        buckets = found;
      }
    }
    buckets.add(second, done.status >= 500, answerFailed(done));
  }

  /** Keeps a finished TCP or passthrough connection. For the TCP routes' and passthrough's observer. */
  recordConnection(done: TcpConnectionDone): void {
    this.#connections[this.#nextConnection] = done;
    this.#nextConnection = (this.#nextConnection + 1) % RECENT_CONNECTIONS;
  }

  /**
   * Rates of the HTTP routes among `routes` (the route table as it is now, in its order), the unrouted
   * line, the last requests; `tcpRoutes` as given, and the last connections.
   */
  snapshot(routes: readonly Route[], tcpRoutes: TcpRouteTraffic[] = []): TrafficSnapshot {
    const nowMs = this.#now();
    const now = Math.floor(nowMs / 1000);
    this.#sweep(now);
    // The window's buckets cover from the start of its oldest second to now, or since the start.
    const from = Math.max((now - RATE_WINDOW_S + 1) * 1000, this.#started);
    const spanS = Math.max(1, (nowMs - from) / 1000);
    const rates = (buckets: Buckets | undefined): Rates =>
      buckets === undefined ? { ...NO_TRAFFIC } : buckets.rates(now, spanS);
    return {
      windowSeconds: RATE_WINDOW_S,
      routes: routes
        .filter((r) => r.tls !== 'passthrough')
        .map((r) => ({
          host: r.host,
          path: r.path ?? '/',
          cluster: r.cluster,
          target: r.target,
          ...rates(this.#byRoute.get(routeKey(r))),
        })),
      unrouted: rates(this.#unrouted),
      requests: this.recent(),
      tcpRoutes,
      connections: this.recentConnections(),
    };
  }

  /** The connections in their ring, newest first. */
  recentConnections(): RecentConnection[] {
    const list: RecentConnection[] = [];
    for (let k = 1; k <= RECENT_CONNECTIONS; k++) {
      const i = (this.#nextConnection - k + RECENT_CONNECTIONS) % RECENT_CONNECTIONS;
      const done = this.#connections[i];
      if (done === undefined) break;
      const { kind, client, route, cluster, target, ms, bytesIn, bytesOut, outcome } = done;
      const at = new Date(done.at).toISOString();
      list.push({ at, kind, client, route, cluster, target, ms, bytesIn, bytesOut, outcome });
    }
    return list;
  }

  /** The requests in the ring, newest first. */
  recent(): RecentRequest[] {
    const list: RecentRequest[] = [];
    for (let k = 1; k <= RECENT_REQUESTS; k++) {
      const done = this.#recent[(this.#next - k + RECENT_REQUESTS) % RECENT_REQUESTS];
      if (done === undefined) break;
      list.push(shown(done));
    }
    return list;
  }

  /** How many routes hold counters now (for tests of the bound). */
  get countedRoutes(): number {
    return this.#byRoute.size;
  }

  /** Drops the route counters that have nothing in the window ending at `now` (the unrouted line stays). */
  #sweep(now: number): void {
    for (const [key, buckets] of this.#byRoute) {
      if (buckets.latest <= now - RATE_WINDOW_S) this.#byRoute.delete(key);
    }
  }
}

function shown(done: RequestDone): RecentRequest {
  return {
    at: new Date(done.at).toISOString(),
    requestId: done.requestId,
    kind: done.kind,
    method: done.method,
    host: done.host.length > MAX_SHOWN_HOST ? `${done.host.slice(0, MAX_SHOWN_HOST)}…` : done.host,
    path: done.path,
    route: done.route ?? null,
    cluster: done.cluster ?? null,
    status: done.status,
    ms: done.ms,
    bytesIn: done.bytesIn,
    bytesOut: done.bytesOut,
    outcome: done.outcome ?? null,
    reason: done.reason ?? null,
  };
}
