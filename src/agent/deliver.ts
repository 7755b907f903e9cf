// The agent's half of one HTTP exchange (docs/http-over-streams.md): the request arrives on a tunnel
// stream, goes to the target through a keep-alive pool, and the response goes back as records. Both
// bodies stream with backpressure at each hop. Most requests go through undici (deliver-undici.ts,
// cheaper per request); those undici cannot send as node:http does stay on the node:http path here.
// The agent's policy is checked before anything is dialed, and again on every address DNS returns,
// so a name cannot smuggle the agent to a metadata service.
import { Agent, type ClientRequest, type IncomingMessage, request } from 'node:http';
import {
  Agent as HttpsAgent,
  type RequestOptions as HttpsRequestOptions,
  request as httpsRequest,
} from 'node:https';
import { isIP, type LookupFunction, type Socket } from 'node:net';
import type { SecureContext } from 'node:tls';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { ErrorCode } from '../protocol/constants.js';
import { deliverH2, H2Sessions } from './deliver-h2.js';
import { deliverTcp } from './deliver-tcp.js';
import { dispatchable, isIdempotent, TargetPools, UndiciDelivery } from './deliver-undici.js';
import { deliverUpgrade } from './deliver-upgrade.js';
import type { DeliverObserver, TargetCheck, TargetScheme, TargetVerdict } from './deliver-types.js';
import { EnvelopeDecoder, encodeHead } from '../proxy/envelope.js';
import { type HttpStreamMeta, parseStreamMeta, parseTcpStreamMeta } from '../proxy/meta.js';
import { corkForThisTick, relayResponse } from '../proxy/relay.js';
import { armConnectTimeout, classify, targetHeaders } from '../proxy/target.js';

export interface DeliverContext {
  policy: TargetCheck;
  pool: Agent;
  /**
   * The keep-alive pool for https:// targets; its connections verify against `targetTls`. The agent
   * always passes it; a context without one (a test's) gets a pool of its own on first use.
   */
  httpsPool?: HttpsAgent;
  /**
   * undici's pools, for the exchanges undici can carry (deliver-undici.ts); `pool` and `httpsPool`
   * carry the rest. Made on first use when absent, as `httpsPool`.
   */
  pools?: TargetPools;
  /** The system roots plus --target-ca, for upgrades to https:// targets (which skip the pool). */
  targetTls?: SecureContext | undefined;
  /** One HTTP/2 session per h2c:// target; made on first use when absent, as `httpsPool`. */
  h2?: H2Sessions;
  /** Connecting to the target must finish within this, or the stream fails with TARGET_TIMEOUT. */
  connectTimeoutMs: number;
  /** DNS for targets a pattern named exactly, refusing protected addresses (see guardedLookup). */
  lookup: LookupFunction;
  /**
   * DNS for targets only a wildcard allowed: refuses the local host too (policy.forbidsWildcardAddress),
   * so that `*.internal` cannot reach 127.0.0.1 through a name.
   */
  wildcardLookup: LookupFunction;
  logger: Logger;
  observer?: DeliverObserver;
}

type TunnelStream = Duplex & {
  readonly meta: Record<string, unknown>;
  reset(code: number, reason: string): void;
};

/**
 * The pool every exchange of one agent shares: keep-alive, TCP_NODELAY, TCP keepalive probes. At most
 * `maxSocketsPerTarget` connections to one host:port; a request beyond that waits in the pool's queue
 * for a free one (its connect timeout starts once it has a socket), so slow clients cannot make the
 * agent hold unbounded connections to a target.
 */
export function createTargetPool(maxSocketsPerTarget = 256): Agent {
  return new Agent(poolOptions(maxSocketsPerTarget));
}

/**
 * The same for https:// targets. Node keys its free sockets by host, port and servername (and the TLS
 * options), so a connection made for one route's serverName never serves another's.
 */
export function createHttpsTargetPool(
  maxSocketsPerTarget = 256,
  secureContext: SecureContext | undefined = undefined,
): HttpsAgent {
  return new HttpsAgent({
    ...poolOptions(maxSocketsPerTarget),
    ...(secureContext === undefined ? {} : { secureContext }),
    rejectUnauthorized: true,
  });
}

function poolOptions(maxSocketsPerTarget: number) {
  return {
    keepAlive: true,
    keepAliveMsecs: 15_000,
    noDelay: true,
    // The most recently used socket is the least likely to have been closed by the target's idle timer.
    scheduling: 'lifo',
    maxSockets: maxSocketsPerTarget,
    maxFreeSockets: Math.min(256, maxSocketsPerTarget),
  } as const;
}

/**
 * The SNI name and the name the certificate is checked against: the route's serverName, else the
 * target's host name. An IP address is sent as no SNI at all (RFC 6066 §3), and the certificate must
 * then carry that address. Always set, or Node would take it from the Host header, the public name.
 */
export function targetServername(meta: HttpStreamMeta, host: string): string {
  return meta.serverName ?? (isIP(host) === 0 ? host : '');
}

/** Serves one stream the controller opened. Never throws; failures reset the stream with a code. */
export function deliverStream(stream: TunnelStream, ctx: DeliverContext): void {
  if (stream.meta.kind === 'tcp') {
    deliverTcpStream(stream, ctx);
    return;
  }
  const parsed = parseStreamMeta(stream.meta);
  if (!parsed.ok) {
    const kind = stream.meta.kind === 'upgrade' ? 'upgrade' : 'http';
    refuseBadMeta(stream, ctx, kind, parsed.reason);
    return;
  }
  const meta = parsed.meta;
  const log = ctx.logger.child({ requestId: meta.requestId });
  const verdict = ctx.policy.check(meta.target);
  if (!verdict.ok) {
    refuseByPolicy(stream, ctx, log, meta.kind, meta.target, verdict.reason);
    return;
  }
  const { host, port, scheme } = verdict;
  const lookup = lookupFor(verdict, ctx);
  if (scheme === 'tcp') {
    // A tcp:// target speaks no HTTP: only a TCP route's stream goes there.
    refuseWrongScheme(stream, ctx, log, meta.kind, meta.target, 'a tcp:// target takes only tcp streams');
    return;
  }
  if (scheme === 'h2c') {
    if (meta.kind === 'upgrade') {
      // HTTP/2 has no Upgrade (RFC 9113 §8.6); the exchange never reaches the target.
      refuseWrongScheme(stream, ctx, log, 'upgrade', meta.target, 'an h2c:// target takes no upgrades');
      return;
    }
    ctx.h2 ??= new H2Sessions();
    const target = { host, port, lookup, connectTimeoutMs: ctx.connectTimeoutMs, sessions: ctx.h2 };
    deliverH2(stream, meta, target, log, ctx.observer);
    return;
  }
  if (meta.kind === 'upgrade') {
    const tls =
      scheme === 'https'
        ? { servername: targetServername(meta, host), secureContext: ctx.targetTls }
        : undefined;
    const target = { host, port, lookup, connectTimeoutMs: ctx.connectTimeoutMs, tls };
    deliverUpgrade(stream, meta, target, log, ctx.observer);
    return;
  }
  const contentLength = dispatchable(meta.head);
  const viaNodeHttp = (): void => new Delivery(stream, meta, ctx, log, scheme, host, port, lookup).start();
  if (contentLength === undefined) {
    viaNodeHttp();
    return;
  }
  ctx.pools ??= new TargetPools(256, ctx.targetTls);
  const https = scheme === 'https';
  const serverName = https ? meta.serverName : undefined;
  const target = { https, host, port, serverName, lookup, connectTimeoutMs: ctx.connectTimeoutMs };
  new UndiciDelivery(stream, meta, ctx.pools, target, contentLength, log, ctx.observer, viaNodeHttp).start();
}

/** A TCP route's stream (deliver-tcp.ts): checked as every other kind, then dialed as raw TCP. */
function deliverTcpStream(stream: TunnelStream, ctx: DeliverContext): void {
  const parsed = parseTcpStreamMeta(stream.meta);
  if (!parsed.ok) {
    refuseBadMeta(stream, ctx, 'tcp', parsed.reason);
    return;
  }
  const meta = parsed.meta;
  const log = ctx.logger.child({ requestId: meta.requestId });
  const verdict = ctx.policy.check(meta.target);
  if (!verdict.ok) {
    refuseByPolicy(stream, ctx, log, 'tcp', meta.target, verdict.reason);
    return;
  }
  const { host, port } = verdict;
  const lookup = lookupFor(verdict, ctx);
  deliverTcp(stream, meta, { host, port, lookup, connectTimeoutMs: ctx.connectTimeoutMs }, log, ctx.observer);
}

type StreamKind = 'http' | 'upgrade' | 'tcp';
type Allowed = Extract<TargetVerdict, { ok: true }>;

/** The DNS a dial to an allowed target goes through: none for an exempt one, the stricter for a wildcard's. */
function lookupFor(verdict: Allowed, ctx: DeliverContext): LookupFunction | undefined {
  return verdict.exempt ? undefined : verdict.viaWildcard ? ctx.wildcardLookup : ctx.lookup;
}

/**
 * Every refusal before a dial ends alike: a line in the agent's log, a reset the controller maps to its
 * error page, and the stream counted once. The reset's reason crosses the tunnel; the log's may say more.
 */
function refuse(
  stream: TunnelStream,
  ctx: DeliverContext,
  kind: StreamKind,
  code: number,
  reason: string,
): void {
  stream.reset(code, reason.slice(0, 200));
  ctx.observer?.streamDone(kind, 0, code, undefined);
}

function refuseBadMeta(stream: TunnelStream, ctx: DeliverContext, kind: StreamKind, reason: string): void {
  ctx.logger.warn({ reason }, 'stream refused: bad metadata');
  refuse(stream, ctx, kind, ErrorCode.PROTOCOL_ERROR, reason);
}

function refuseByPolicy(
  stream: TunnelStream,
  ctx: DeliverContext,
  log: Logger,
  kind: StreamKind,
  target: string,
  reason: string,
): void {
  // The reason names the agent's patterns: it goes to the agent's log, the controller sees the code.
  log.warn({ target, reason }, 'target refused by policy');
  refuse(stream, ctx, kind, ErrorCode.TARGET_DENIED, 'target not allowed by the agent policy');
}

function refuseWrongScheme(
  stream: TunnelStream,
  ctx: DeliverContext,
  log: Logger,
  kind: StreamKind,
  target: string,
  why: string,
): void {
  log.warn({ target }, `stream refused: ${why}`);
  refuse(stream, ctx, kind, ErrorCode.TARGET_UNREACHABLE, `${target}: ${why}`);
}

class Delivery {
  #req: ClientRequest | null = null;
  #res: IncomingMessage | null = null;
  #stopRelay: () => void = () => {};
  #responded = false;
  /** Body bytes have been taken from the stream: the request can no longer be replayed. */
  #bodyStarted = false;
  #retried = false;
  #done = false;
  /** The wire code this side reset the stream with, or -1. */
  #reset = -1;
  #error: Error | undefined;
  readonly #decoder: EnvelopeDecoder;
  readonly #started = performance.now();

  constructor(
    private readonly stream: TunnelStream,
    private readonly meta: HttpStreamMeta,
    private readonly ctx: DeliverContext,
    private readonly log: Logger,
    private readonly scheme: TargetScheme,
    private readonly host: string,
    private readonly port: number,
    /** The checking DNS lookup for this target; undefined when the policy exempted it. */
    private readonly lookup: LookupFunction | undefined,
  ) {
    this.#decoder = new EnvelopeDecoder('request', {
      onBody: (piece) => this.#onBody(piece),
      onTrailers: (raw) => this.#req?.addTrailers(pairs(raw)),
    });
  }

  start(): void {
    if (!this.#send()) return;
    this.stream.on('data', this.#onStreamData);
    this.stream.on('end', this.#onStreamEnd);
    this.stream.on('error', this.#onStreamError);
    this.stream.on('close', this.#onStreamClose);
    // Taken over from undici (UndiciDelivery's fallback) after the request's FIN came.
    if (this.stream.readableEnded) this.#onStreamEnd();
  }

  /** Sends the request head; false when Node refused it (the stream is reset then). */
  #send(): boolean {
    const { head } = this.meta;
    const headers = targetHeaders(head);
    let req: ClientRequest;
    try {
      // One options object, no spread: this runs for every request.
      const https = this.scheme === 'https';
      const options: HttpsRequestOptions = {
        host: this.host,
        port: this.port,
        method: head.method,
        path: head.path,
        headers,
        setHost: false,
        agent: https
          ? (this.ctx.httpsPool ??= createHttpsTargetPool(256, this.ctx.targetTls))
          : this.ctx.pool,
        lookup: this.lookup,
      };
      if (https) options.servername = targetServername(this.meta, this.host);
      req = https ? httpsRequest(options) : request(options);
    } catch (err) {
      // parseStreamMeta refuses what Node's client is known to refuse; anything it missed still
      // resets only this stream, never the agent.
      this.log.warn({ err: (err as Error).message }, 'stream refused: Node refused the request head');
      this.#abort(ErrorCode.PROTOCOL_ERROR, `request head refused: ${(err as Error).message}`.slice(0, 200));
      return false;
    }
    this.#req = req;
    req.on('socket', this.#onSocket);
    req.on('information', this.#onInformation);
    req.on('upgrade', this.#onUnrequestedUpgrade);
    req.on('response', this.#onResponse);
    req.on('error', this.#onRequestError);
    req.on('drain', this.#onRequestDrain);
    // Expect: 100-continue means the target must see the head before any body exists.
    if (head.headers.some((v, i) => i % 2 === 0 && v.toLowerCase() === 'expect')) req.flushHeaders();
    return true;
  }

  // --- request direction: stream → target ---

  readonly #onStreamData = (chunk: Buffer): void => {
    // What one tunnel read brought for this request leaves in one write (see corkForThisTick).
    if (this.#req !== null) corkForThisTick(this.#req);
    try {
      this.#decoder.push(chunk);
    } catch (err) {
      this.#abort(ErrorCode.PROTOCOL_ERROR, (err as Error).message.slice(0, 200));
    }
  };

  #onBody(piece: Buffer): void {
    this.#bodyStarted = true;
    if (this.#req !== null && !this.#req.write(piece)) this.stream.pause();
  }

  readonly #onRequestDrain = (): void => {
    this.stream.resume();
  };

  readonly #onStreamEnd = (): void => {
    try {
      this.#decoder.finish();
    } catch (err) {
      this.#abort(ErrorCode.PROTOCOL_ERROR, (err as Error).message.slice(0, 200));
      return;
    }
    this.#req?.end();
  };

  readonly #onStreamError = (err: Error): void => {
    // The controller reset the stream (its client went away, or it gave up waiting): drop the request
    // to the target, which sees the connection close, as it would behind nginx.
    this.log.debug({ err: err.message }, 'stream reset by the controller');
    this.#error = err;
    this.#finish('reset');
  };

  readonly #onStreamClose = (): void => {
    if (!this.#done) this.#finish('closed');
  };

  // --- response direction: target → stream ---

  readonly #onSocket = (socket: Socket): void => {
    armConnectTimeout(socket, this.ctx.connectTimeoutMs);
  };

  readonly #onInformation = (info: {
    statusCode: number;
    statusMessage: string;
    rawHeaders: string[];
  }): void => {
    this.stream.write(
      encodeHead({ status: info.statusCode, statusText: info.statusMessage, headers: info.rawHeaders }),
    );
  };

  /**
   * A 101 to a request that asked for no upgrade: the target now speaks something else on that
   * connection, which is dropped. The head goes to the controller, which answers its client 502 at once
   * rather than waiting for a response that will never come.
   */
  readonly #onUnrequestedUpgrade = (res: IncomingMessage, socket: Socket): void => {
    socket.destroy();
    this.#res = res;
    this.#responded = true;
    this.log.warn({ target: this.meta.target }, 'target switched protocols unasked');
    this.stream.write(encodeHead({ status: 101, statusText: res.statusMessage, headers: res.rawHeaders }));
    this.stream.end();
    this.#finish('switched');
  };

  readonly #onResponse = (res: IncomingMessage): void => {
    this.#res = res;
    this.#responded = true;
    // The target's connection ending before its body did means the controller must cut its client too.
    this.#stopRelay = relayResponse(res, this.stream, this.meta, () =>
      this.#abort(ErrorCode.CANCEL, 'target closed the connection mid-response'),
    );
    this.log.debug({ status: res.statusCode, target: this.meta.target }, 'target answered');
  };

  readonly #onRequestError = (err: NodeJS.ErrnoException): void => {
    if (this.#responded || this.#done) return;
    const req = this.#req!;
    // A kept-alive socket the target closed just as we reused it: the request most likely never
    // reached the application, so it is sent once more on a fresh connection (Node's documented
    // pattern). Only an idempotent one, as on the undici path (docs/http-over-streams.md): the target
    // may have read the head and acted on it before it closed, and a POST must not run twice.
    const replayable = !this.#bodyStarted && !this.#retried && isIdempotent(this.meta.head.method);
    if (req.reusedSocket && err.code === 'ECONNRESET' && replayable) {
      this.#retried = true;
      this.#detachRequest(req);
      if (this.#send() && this.stream.readableEnded) this.#req?.end();
      return;
    }
    const [code, reason] = classify(err, this.meta.target);
    const what = code === ErrorCode.TARGET_TLS ? 'target TLS failed' : 'target request failed';
    this.log.warn({ target: this.meta.target, err: err.message, code: err.code }, what);
    this.#abort(code, reason);
  };

  #detachRequest(req: ClientRequest): void {
    req.off('information', this.#onInformation);
    req.off('upgrade', this.#onUnrequestedUpgrade);
    req.off('response', this.#onResponse);
    req.off('error', this.#onRequestError);
    req.off('drain', this.#onRequestDrain);
    req.on('error', ignore);
    req.destroy();
  }

  #abort(code: number, reason: string): void {
    if (!this.stream.destroyed) {
      if (this.#reset < 0) this.#reset = code;
      this.stream.reset(code, reason);
    }
    this.#finish('aborted');
  }

  #finish(how: string): void {
    if (this.#done) return;
    this.#done = true;
    const req = this.#req;
    if (req !== null && !(this.#res?.complete ?? false)) this.#detachRequest(req);
    this.#stopRelay();
    // A stream this side ended cleanly (closed by the peer, or ended after an unasked 101) is left to
    // close on its own; any other end tears it down.
    if (how !== 'closed' && how !== 'switched') this.stream.destroy();
    this.ctx.observer?.streamDone('http', this.#res?.statusCode ?? 0, this.#reset, this.#error);
    this.log.debug({ how, ms: Math.round(performance.now() - this.#started) }, 'stream finished');
  }
}

function ignore(): void {}

function pairs(raw: string[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) out.push([raw[i]!, raw[i + 1]!]);
  return out;
}
