// The controller's public HTTP edge: every request is checked, routed by Host and path, and sent down a
// tunnel of its cluster; whatever goes wrong becomes an error page with a reason and the request id
// (DESIGN §3). One JSON log line per request.
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { type ReasonCode, SluiceError, type SluiceErrorCode } from '../errors.js';
import { type ExchangeStats, forwardHttp, type Outcome } from '../proxy/forward.js';
import { renderErrorPage } from '../proxy/error-page.js';
import { chooseRequestId, forwardRequestHeaders } from '../proxy/headers.js';
import type { HttpStreamMeta } from '../proxy/meta.js';
import { forwardUpgrade, serializeHead } from '../proxy/upgrade.js';
import type { Stream } from '../tunnel/stream.js';
import type { HttpOptions } from './config.js';
import { normalizeHost, type Route, type RouteTable } from './routes.js';
import type { Tunnel, TunnelRegistry } from './tunnels.js';

/** A request is tried on at most this many tunnels when agents refuse it unprocessed (draining). */
const MAX_ATTEMPTS = 3;

export interface EdgeOptions {
  routes: () => RouteTable;
  registry: TunnelRegistry;
  http: HttpOptions;
  logger: Logger;
  proto: 'http' | 'https';
  /** Told of every request once it is over, after its log line: for metrics and the dashboard. */
  onRequestDone?: (done: RequestDone) => void;
}

/** A finished request, as the log line has it: plain or upgrade, served or refused by this edge. */
export interface RequestDone {
  readonly kind: 'http' | 'upgrade';
  /** Wall-clock time the request arrived, in ms since the epoch. */
  readonly at: number;
  readonly requestId: string;
  readonly method: string;
  readonly host: string;
  readonly path: string;
  /** The route's host and path prefix, as logged; absent when no route matched. */
  readonly route?: string;
  readonly cluster?: string;
  /** 0 when no status was sent (the client left first, or an upgrade broke before its answer). */
  readonly status: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly ms: number;
  /** How the exchange ended (docs/http-over-streams.md); absent when it never reached a tunnel. */
  readonly outcome?: string;
  /**
   * The SLUICE_ERR_* code of the last tunnel error the request met on its streams (a reset, a refusal,
   * a stream that could not be opened); absent when none. A tunnel's own end is not repeated here.
   */
  readonly code?: SluiceErrorCode;
  /** Why this edge refused it, for requests answered with an error page. */
  readonly reason?: string;
  /** `reason` as a stable code (docs/errors.md), the `code` of the JSON error page. */
  readonly reasonCode?: ReasonCode;
}

// Ids are a random per-process prefix and a counter, 32 hex digits: unique across controllers and
// restarts, one word in a log line, and far cheaper than 16 fresh random bytes per request. They are
// not secrets.
const ID_PREFIX = randomBytes(8).toString('hex');
let idCounter = 0n;

/** A request id: unique enough to join logs across hops, and one word in a log line. */
export function newRequestId(): string {
  idCounter = (idCounter + 1n) & 0xffff_ffff_ffff_ffffn;
  return ID_PREFIX + idCounter.toString(16).padStart(16, '0');
}

/**
 * One request's log line as it fills in. Every field exists from the start (undefined until known), so
 * all requests share one object shape; the finished object is what onRequestDone receives.
 */
interface LogFields {
  requestId: string;
  kind: RequestDone['kind'];
  /** performance.now() at arrival, for `ms`; not logged. */
  started: number;
  at: number;
  method: string;
  host: string;
  path: string;
  route: string | undefined;
  cluster: string | undefined;
  agent: string | undefined;
  status: number;
  bytesIn: number;
  bytesOut: number;
  ms: number;
  outcome: string | undefined;
  code: SluiceErrorCode | undefined;
  reason: string | undefined;
  reasonCode: ReasonCode | undefined;
  detail: string | undefined;
}

/** One request being served, plain or upgrade: how to run it on a stream and how to refuse it. */
interface Exchange {
  req: IncomingMessage;
  /** Its kind is `log.kind`. */
  log: LogFields;
  run(stream: Stream, meta: HttpStreamMeta, stats: ExchangeStats): Promise<Outcome>;
  fail(status: number, code: ReasonCode, reason: string): void;
}

export class PublicEdge {
  readonly #options: EdgeOptions;
  #inFlight = 0;
  #idle: (() => void) | null = null;

  constructor(options: EdgeOptions) {
    this.#options = options;
  }

  /** Requests being served right now. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Resolves once no request is in flight. */
  whenIdle(): Promise<void> {
    if (this.#inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const previous = this.#idle;
      this.#idle = () => {
        previous?.();
        resolve();
      };
    });
  }

  readonly onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const log = this.#begin(req, 'http');
    const exchange: Exchange = {
      req,
      log,
      run: (stream, meta, stats) =>
        forwardHttp(req, res, stream, { ...this.#timing(meta), headRequest: req.method === 'HEAD' }, stats),
      fail: (status, code, reason) => this.#sendError(req, res, log, status, code, reason),
    };
    const served = this.#serve(exchange).catch((err: unknown) => this.#internalError(exchange, err));
    res.once('close', () => this.#end(log, served, () => (res.headersSent ? res.statusCode : 0)));
  };

  /**
   * An Upgrade request (WebSocket or any protocol): Node hands over the raw socket and the bytes that
   * followed the head, which go to the stream first (docs/http-over-streams.md, "Upgrades").
   */
  readonly onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const log = this.#begin(req, 'upgrade');
    // The status to log: the target's answer, or the error page this edge wrote.
    let status = 0;
    let running: ExchangeStats | undefined;
    const exchange: Exchange = {
      req,
      log,
      run: (stream, meta, stats) => {
        running = stats;
        const options = { ...this.#timing(meta), idleTimeoutMs: this.#options.http.upgradeIdleTimeoutMs };
        return forwardUpgrade(socket as Socket, head, stream, options, stats);
      },
      fail: (code, reasonCode, reason) => {
        log.reason = reason;
        log.reasonCode = reasonCode;
        status = code;
        const { accept } = req.headers;
        log.bytesOut += writeRawError(socket, code, reasonCode, reason, log.requestId, accept, req.method);
      },
    };
    socket.on('error', ignore);
    const served = this.#serve(exchange).catch((err: unknown) => this.#internalError(exchange, err));
    socket.once('close', () => this.#end(log, served, () => status || (running?.status ?? 0)));
  };

  /**
   * Requests Node could not parse, or that broke a limit before they became requests: answered with a
   * page and a closed connection, as the connection's framing can no longer be trusted.
   */
  readonly onClientError = (err: NodeJS.ErrnoException, socket: Duplex): void => {
    if (
      err.code === 'ECONNRESET' ||
      !socket.writable ||
      (socket as Socket & { _httpMessage?: unknown })._httpMessage
    ) {
      socket.destroy();
      return;
    }
    const [status, reasonCode, reason] =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? ([431, 'head_too_large', 'the request head is larger than this gateway accepts'] as const)
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? ([408, 'request_timeout', 'the request was not received in time'] as const)
          : ([400, 'bad_request', 'the request is not valid HTTP/1.1'] as const);
    const requestId = newRequestId();
    writeRawError(socket, status, reasonCode, reason, requestId, undefined, undefined);
    const fields = { requestId, status, reason, reasonCode, err: err.code ?? err.message };
    this.#options.logger.info(fields, 'bad request');
  };

  #begin(req: IncomingMessage, kind: RequestDone['kind']): LogFields {
    this.#inFlight++;
    return {
      requestId: chooseRequestId(req.rawHeaders, newRequestId),
      kind,
      started: performance.now(),
      at: Date.now(),
      method: req.method ?? '',
      host: req.headers.host ?? '',
      path: (req.url ?? '').split('?', 1)[0]!.slice(0, 512),
      route: undefined,
      cluster: undefined,
      agent: undefined,
      status: 0,
      bytesIn: 0,
      bytesOut: 0,
      ms: 0,
      outcome: undefined,
      code: undefined,
      reason: undefined,
      reasonCode: undefined,
      detail: undefined,
    };
  }

  /**
   * The connection closed. The line is written once `served` has settled too: the exchange settles on
   * this same close event and #serve records its bytes and outcome only a microtask later, so a line
   * written right away would lack them.
   */
  #end(log: LogFields, served: Promise<void>, status: () => number): void {
    log.ms = Math.round((performance.now() - log.started) * 10) / 10;
    const write = (): void => {
      log.status = status();
      const level = log.outcome === 'broken' || (log.status >= 500 && log.status !== 503) ? 'warn' : 'info';
      const { logger } = this.#options;
      // The copy that leaves out the fields a log line does not need costs a couple of microseconds,
      // so it is made only when the line is written (the bench and busy gateways log at warn).
      if (logger.isLevelEnabled(level)) {
        const { started, at, kind, ...fields } = log;
        void started;
        void at;
        void kind;
        logger[level](fields, 'request');
      }
      this.#options.onRequestDone?.(log);
      if (--this.#inFlight === 0 && this.#idle !== null) {
        const idle = this.#idle;
        this.#idle = null;
        idle();
      }
    };
    void served.then(write, write);
  }

  #timing(meta: HttpStreamMeta): { requestId: string; via: string; responseTimeoutMs: number } {
    const { http } = this.#options;
    return { requestId: meta.requestId, via: http.via, responseTimeoutMs: http.responseTimeoutMs };
  }

  #internalError(exchange: Exchange, err: unknown): void {
    exchange.log.detail = err instanceof Error ? err.message : String(err);
    exchange.fail(502, 'internal', 'internal error while proxying the request');
  }

  async #serve(exchange: Exchange): Promise<void> {
    const { req, log } = exchange;
    const { http } = this.#options;
    if (req.rawHeaders.length / 2 > http.maxHeaders) {
      const reason = `the request has more than ${http.maxHeaders} header fields`;
      return exchange.fail(431, 'too_many_headers', reason);
    }
    const target = requestTarget(req);
    if (typeof target === 'string') return exchange.fail(400, 'bad_request', target);
    const route = this.#options.routes().match(target.host, target.path);
    if (route === undefined) return exchange.fail(404, 'no_route', `no route for host ${target.host}`);
    log.route = route.path === undefined || route.path === '/' ? route.host : `${route.host}${route.path}`;
    log.cluster = route.cluster;

    const meta = this.#meta(req, route, target.path, log.requestId, log.kind);
    if (meta === undefined) {
      return exchange.fail(508, 'loop', 'the request has already passed through this gateway (Via loop)');
    }
    const stats: ExchangeStats = { bytesIn: 0, bytesOut: 0, status: 0, code: undefined };
    const outcome = await this.#forward(exchange, route, meta, stats);
    log.bytesIn = stats.bytesIn;
    log.bytesOut = stats.bytesOut;
    log.outcome = outcome.kind;
    log.code = stats.code;
    if (outcome.kind === 'failed') {
      log.detail = outcome.detail;
      exchange.fail(outcome.status, outcome.code, outcome.reason);
    } else if (outcome.kind === 'broken') {
      log.detail = outcome.detail;
    }
  }

  async #forward(
    exchange: Exchange,
    route: Route,
    meta: HttpStreamMeta,
    stats: ExchangeStats,
  ): Promise<Outcome> {
    const { registry } = this.#options;
    const tried = new Set<Tunnel>();
    let last: Outcome | undefined;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const tunnel = registry.pick(route.cluster, tried);
      if (tunnel === undefined) break;
      tried.add(tunnel);
      let stream;
      try {
        stream = tunnel.session.open(meta as unknown as Record<string, unknown>);
      } catch (err) {
        // Closed, draining or at a limit since pick(): another tunnel may still take it.
        if (err instanceof SluiceError) stats.code = err.code;
        last = {
          kind: 'failed',
          status: 503,
          code: 'no_tunnel',
          reason: 'no tunnel could take the request',
          retryable: true,
          detail: (err as Error).message,
        };
        continue;
      }
      exchange.log.agent = `${tunnel.agent}/${tunnel.replica}`;
      const outcome = await exchange.run(stream, meta, stats);
      if (outcome.kind !== 'failed' || !outcome.retryable) return outcome;
      last = outcome;
    }
    if (last !== undefined) return last;
    const reason = `no agent of cluster ${route.cluster} is connected`;
    const code = 'no_tunnel';
    return { kind: 'failed', status: 503, code, reason, retryable: false, detail: 'no live tunnel' };
  }

  /** The stream's open metadata, or undefined for a request that loops through this gateway. */
  #meta(
    req: IncomingMessage,
    route: Route,
    path: string,
    requestId: string,
    kind: 'http' | 'upgrade',
  ): HttpStreamMeta | undefined {
    const socket = req.socket;
    const address = unmapIPv4(socket.remoteAddress ?? '');
    const { headers, loop } = forwardRequestHeaders(req.rawHeaders, {
      clientAddress: address,
      clientPort: socket.remotePort,
      proto: this.#options.proto,
      host: req.headers.host ?? '',
      requestId,
      via: this.#options.http.via,
      httpVersion: req.httpVersion,
      upgrade: kind === 'upgrade',
    });
    if (loop) return undefined;
    const meta: HttpStreamMeta = {
      kind,
      target: route.target,
      client: `${address}:${socket.remotePort ?? 0}`,
      requestId,
      head: { method: req.method ?? 'GET', path, version: req.httpVersion, headers },
    };
    if (req.headers['transfer-encoding'] !== undefined) meta.head.chunked = true;
    return meta;
  }

  #sendError(
    req: IncomingMessage,
    res: ServerResponse,
    log: LogFields,
    status: number,
    code: ReasonCode,
    reason: string,
  ): void {
    log.reason = reason;
    log.reasonCode = code;
    if (res.headersSent || res.destroyed) {
      res.destroy();
      return;
    }
    const page = renderErrorPage({
      status,
      code,
      reason,
      requestId: log.requestId,
      accept: req.headers.accept,
      method: req.method,
    });
    res.writeHead(page.status, page.headers);
    res.end(page.body);
    log.bytesOut += page.body.length;
  }
}

/** Where a request goes: the host to route by and the path to send, or why the request is refused. */
function requestTarget(req: IncomingMessage): { host: string; path: string } | string {
  const url = req.url ?? '';
  // RFC 9112 §3.2: exactly one Host field; a second one could route by one and be served by the other.
  let hosts = 0;
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i]!.length === 4 && req.rawHeaders[i]!.toLowerCase() === 'host') hosts++;
  }
  if (hosts > 1) return 'the request has more than one Host header';
  const host = req.headers.host ?? '';
  if (host === '' || normalizeHost(host) === undefined) return 'the request has no valid Host header';
  let path = url;
  if (!url.startsWith('/')) {
    if (url === '*' && req.method === 'OPTIONS') return { host, path: '*' };
    // Absolute form (RFC 9112 §3.2.2) is accepted when it names the same host as the Host header.
    const absolute = parseAbsolute(url);
    if (absolute === undefined) return 'the request target is not a path';
    if (normalizeHost(absolute.host) !== normalizeHost(host)) {
      return 'the request target names another host than the Host header';
    }
    path = absolute.path;
  }
  if (hasDotSegment(path)) return 'the request path has dot segments (/./ or /../)';
  return { host, path };
}

function parseAbsolute(url: string): { host: string; path: string } | undefined {
  const m = /^https?:\/\/([^/?#@]+)([/?][^#]*)?$/i.exec(url);
  if (m === null) return undefined;
  const rest = m[2] ?? '/';
  return { host: m[1]!, path: rest.startsWith('/') ? rest : `/${rest}` };
}

// A path prefix route fences off part of a target only if `/api/../admin` cannot walk out of it, so
// such paths (also percent-encoded, or with backslashes that some servers treat as slashes) are refused
// at the edge rather than normalized into something the client did not send.
function hasDotSegment(path: string): boolean {
  const bare = path.split('?', 1)[0]!;
  return bare
    .replace(/%2e/gi, '.')
    .replace(/%2f|%5c|\\/gi, '/')
    .split('/')
    .some((segment) => segment === '.' || segment === '..');
}

function unmapIPv4(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

/** An error page on a socket that left Node's HTTP machinery; the connection closes after it. */
function writeRawError(
  socket: Duplex,
  status: number,
  code: ReasonCode,
  reason: string,
  requestId: string,
  accept: string | undefined,
  method: string | undefined,
): number {
  if (!socket.writable) {
    socket.destroy();
    return 0;
  }
  const page = renderErrorPage({ status, code, reason, requestId, accept, method });
  const headers = page.headers.some((h, i) => i % 2 === 0 && h.toLowerCase() === 'connection')
    ? page.headers
    : [...page.headers, 'Connection', 'close'];
  socket.end(Buffer.concat([serializeHead(page.status, undefined, headers), page.body]));
  return page.body.length;
}

function ignore(): void {}
