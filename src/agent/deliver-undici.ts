// The agent's HTTP/1.1 exchanges on undici (issue #17): the same records as deliver.ts's node:http
// path, through an undici Pool per target and a dispatch handler, which skips node:http's
// ClientRequest and IncomingMessage streams. undici cannot send request trailers or wait for a
// 100 Continue, so a chunked request body or an Expect field takes the node:http path instead
// (dispatchable below); deliver.ts chooses.
import type { LookupFunction } from 'node:net';
import { Readable } from 'node:stream';
import type { Duplex } from 'node:stream';
import type { SecureContext } from 'node:tls';
import type { Logger } from 'pino';
import { buildConnector, Pool } from 'undici';
import type { Dispatcher } from 'undici';
import { ErrorCode } from '../protocol/constants.js';
import { EnvelopeDecoder, encodeCompactHead, encodeHead, encodeTrailers } from '../proxy/envelope.js';
import { type HttpStreamMeta, type RequestHead, wantsCompactHeads } from '../proxy/meta.js';
import { writeBody } from '../proxy/relay.js';
import { classify, connectTimeoutError, targetHeaders } from '../proxy/target.js';
import type { DeliverObserver } from './deliver-types.js';

type TunnelStream = Duplex & {
  readonly meta: Record<string, unknown>;
  reset(code: number, reason: string): void;
};

/** Where one exchange goes: the pool options that must match for a connection to be shared. */
export interface PoolTarget {
  https: boolean;
  host: string;
  port: number;
  /** For https://: the route's serverName; undefined means the host's name (none for an IP). */
  serverName: string | undefined;
  /** The checking DNS lookup; undefined when the policy exempted the target. */
  lookup: LookupFunction | undefined;
  connectTimeoutMs: number;
}

/**
 * The keep-alive pools of one agent, one per target and per what its connections were made with
 * (scheme, SNI name, DNS check), so that a connection made for one route's serverName or a wildcard's
 * stricter lookup never serves another. At most `maxSocketsPerTarget` connections each; requests
 * beyond wait in the pool's queue, as in node:http's Agent.
 */
export class TargetPools {
  readonly #pools = new Map<string, Pool>();
  readonly #lookups = new Map<LookupFunction | undefined, number>();

  constructor(
    private readonly maxSocketsPerTarget = 256,
    private readonly secureContext: SecureContext | undefined = undefined,
  ) {}

  get(t: PoolTarget): Pool {
    let id = this.#lookups.get(t.lookup);
    if (id === undefined) this.#lookups.set(t.lookup, (id = this.#lookups.size));
    const key = `${t.https ? 's' : 'p'}${id} ${t.host} ${t.port} ${t.serverName ?? ''}`;
    let pool = this.#pools.get(key);
    if (pool === undefined) {
      pool = this.#create(t);
      this.#pools.set(key, pool);
      // As undici's Agent does: a pool that holds no connection and no request is closed, so that a
      // wildcard's many targets do not each keep one for the agent's lifetime.
      const unused = (): void => {
        const s = pool!.stats;
        if (s.connected > 0 || s.size > 0 || this.#pools.get(key) !== pool) return;
        this.#pools.delete(key);
        pool!.close().catch(ignore);
      };
      pool.on('disconnect', unused).on('connectionError', unused);
    }
    return pool;
  }

  /** How many pools are open (for tests: idle ones are closed). */
  get size(): number {
    return this.#pools.size;
  }

  #create(t: PoolTarget): Pool {
    const host = t.host.includes(':') ? `[${t.host}]` : t.host;
    const connector = buildConnector({
      timeout: t.connectTimeoutMs,
      keepAlive: true,
      keepAliveInitialDelay: 15_000,
      ...(t.lookup === undefined ? {} : { lookup: t.lookup }),
      ...(t.https ? { rejectUnauthorized: true } : {}),
      ...(t.https && this.secureContext !== undefined ? { secureContext: this.secureContext } : {}),
    });
    // undici takes the SNI name from each request, by default from its Host field: the public name.
    // The pool's connections use the route's serverName, else the target's host name, and no SNI for
    // an IP address (RFC 6066 §3), whose certificate must then carry that address (targetServername).
    const servername = t.serverName;
    return new Pool(`${t.https ? 'https' : 'http'}://${host}:${t.port}`, {
      connections: this.maxSocketsPerTarget,
      pipelining: 1,
      // node:http's client has neither: how long a target may take is the controller's to decide
      // (its responseTimeout), not the agent's.
      headersTimeout: 0,
      bodyTimeout: 0,
      connect: (options, callback) => connector({ ...options, servername }, callback),
    });
  }

  /** Connections in use and idle, over every pool (for /debug/memory). */
  counts(): { busy: number; free: number } {
    let busy = 0;
    let free = 0;
    for (const pool of this.#pools.values()) {
      const s = pool.stats;
      busy += s.connected - s.free;
      free += s.free;
    }
    return { busy, free };
  }

  destroy(): void {
    for (const pool of this.#pools.values()) pool.destroy().catch(ignore);
    this.#pools.clear();
  }
}

// Fields undici's request refuses or handles itself in ways node:http does not: Expect (it cannot wait
// for a 100 Continue), the framing and connection fields (the controller removed them as hop-by-hop;
// should one arrive, node:http sends it as it was).
const NOT_DISPATCHABLE = new Set(['expect', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade']);
const DIGITS = /^\d{1,15}$/;

/**
 * Whether undici can send this head as node:http would: not chunked (only a chunked body has trailers,
 * which undici cannot send), an origin-form path (undici refuses `*`), no field from NOT_DISPATCHABLE,
 * and one Host (undici refuses two, and adds one where there is none) and at most one well-formed
 * Content-Length (undici refuses others, node:http sends them). Returns the Content-Length when it can (-1 for none), undefined when node:http must.
 */
export function dispatchable(head: RequestHead): number | undefined {
  if (head.chunked === true || head.path.charCodeAt(0) !== 0x2f) return undefined;
  const raw = head.headers;
  let length = -1;
  let hosts = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (name === 'host') {
      if (++hosts > 1) return undefined;
    } else if (name === 'content-length') {
      if (length !== -1 || !DIGITS.test(raw[i + 1]!)) return undefined;
      length = Number(raw[i + 1]);
    } else if (NOT_DISPATCHABLE.has(name)) return undefined;
  }
  return hosts === 1 ? length : undefined;
}

/** One exchange through a TargetPools pool. A handler object for undici's dispatch. */
export class UndiciDelivery implements Dispatcher.DispatchHandler {
  #abortRequest: ((err?: Error) => void) | null = null;
  #body: Readable | null = null;
  /** undici's resume for this response, and whether the target's side is paused for backpressure. */
  #resume: () => void = ignore;
  #paused = false;
  #status = 0;
  /** Body bytes have been taken from the stream: the request can no longer be replayed. */
  #bodyStarted = false;
  #retried = false;
  #complete = false;
  #done = false;
  /** The wire code this side reset the stream with, or -1. */
  #reset = -1;
  #error: Error | undefined;
  readonly #decoder: EnvelopeDecoder;
  readonly #started = performance.now();
  /** The controller reads compact HEAD records: undici's raw header buffers go as they are. */
  readonly #compactHeads: boolean;

  constructor(
    private readonly stream: TunnelStream,
    private readonly meta: HttpStreamMeta,
    private readonly pools: TargetPools,
    private readonly target: PoolTarget,
    /** The request's Content-Length, -1 for none (no body, RFC 9112 §6.3: it is not chunked). */
    private readonly contentLength: number,
    private readonly log: Logger,
    private readonly observer: DeliverObserver | undefined,
    /** Serves the stream on node:http instead, from the start; see onError. */
    private readonly fallback: () => void,
  ) {
    this.#compactHeads = wantsCompactHeads(meta);
    this.#decoder = new EnvelopeDecoder('request', {
      onBody: (piece) => this.#onBody(piece),
      // Only a chunked body has trailers, and a chunked one never comes here.
      onTrailers: () => this.#abort(ErrorCode.PROTOCOL_ERROR, 'trailers on a body that is not chunked'),
    });
  }

  start(): void {
    this.stream.on('data', this.#onStreamData);
    this.stream.on('end', this.#onStreamEnd);
    this.stream.on('error', this.#onStreamError);
    this.stream.on('close', this.#onStreamClose);
    this.stream.on('drain', this.#onStreamDrain);
    this.#newBody();
    this.#dispatch();
  }

  /** The body undici reads this attempt from; a replay gets a fresh one (the first is undici's to drop). */
  #newBody(): void {
    if (this.contentLength > 0) this.#body = new Readable({ read: this.#onBodyRead });
  }

  #dispatch(): void {
    const { head } = this.meta;
    // The pool is looked up again for a retry: the first one may have been closed as unused since.
    this.pools.get(this.target).dispatch(
      {
        path: head.path,
        method: head.method,
        headers: targetHeaders(head),
        body: this.#body,
        // No pipelining (the pool's is 1), so undici's replay of requests queued behind a failed one
        // never applies; the one retry is ours (onError).
        idempotent: false,
        // The same for every request of a pool: undici reconnects when a request's differs from its
        // connection's. The name the connections really use is the pool's (TargetPools.#create).
        servername: this.target.serverName ?? this.target.host,
      } as Dispatcher.DispatchOptions,
      this,
    );
  }

  // --- request direction: stream → target ---

  readonly #onStreamData = (chunk: Buffer): void => {
    try {
      this.#decoder.push(chunk);
    } catch (err) {
      this.#abort(ErrorCode.PROTOCOL_ERROR, (err as Error).message.slice(0, 200));
    }
  };

  #onBody(piece: Buffer): void {
    this.#bodyStarted = true;
    // The target answered before it took the whole body (a 413, say); undici has dropped that
    // connection and the body with it, so the rest is read and discarded, never held paused.
    if (this.#complete) return;
    if (this.#body === null) {
      this.#abort(ErrorCode.PROTOCOL_ERROR, 'a request body without Content-Length or chunked framing');
      return;
    }
    if (!this.#body.push(piece)) this.stream.pause();
  }

  readonly #onBodyRead = (): void => {
    this.stream.resume();
  };

  readonly #onStreamEnd = (): void => {
    try {
      this.#decoder.finish();
    } catch (err) {
      this.#abort(ErrorCode.PROTOCOL_ERROR, (err as Error).message.slice(0, 200));
      return;
    }
    this.#body?.push(null);
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

  readonly #onStreamDrain = (): void => {
    if (!this.#paused) return;
    this.#paused = false;
    this.#resume();
  };

  // --- response direction: target → stream (undici's handler) ---

  onConnect(abort: (err?: Error) => void): void {
    // A stream that ended while the request waited for a connection cancels it here.
    if (this.#done) abort(new Error('the stream is gone'));
    else this.#abortRequest = abort;
  }

  onHeaders(status: number, raw: Buffer[], resume: () => void, statusText: string): boolean {
    if (this.#done) return false;
    // Interim answers (103 Early Hints, 102) are relayed as they come. undici never passes a 100 or a
    // 101 here, none having been asked for: it fails the request, and onError deals with both.
    const ok = this.stream.write(
      this.#compactHeads
        ? encodeCompactHead(status, statusText, raw)
        : encodeHead({ status, statusText, headers: latin1(raw) }),
    );
    if (status < 200) return true;
    this.#status = status;
    this.#resume = resume;
    this.log.debug({ status, target: this.meta.target }, 'target answered');
    if (ok) return true;
    this.#paused = true;
    return false;
  }

  onData(chunk: Buffer): boolean {
    if (this.#done) return false;
    if (writeBody(this.stream, chunk)) return true;
    this.#paused = true;
    return false;
  }

  onComplete(trailers: string[] | Buffer[] | null): void {
    if (this.#done) return;
    this.#complete = true;
    this.stream.resume();
    if (trailers !== null && trailers.length > 0) {
      this.stream.write(
        encodeTrailers(trailers.map((t) => (typeof t === 'string' ? t : t.toString('latin1')))),
      );
    }
    this.stream.end();
  }

  onError(err: NodeJS.ErrnoException): void {
    if (this.#done) return;
    if (this.#status !== 0) {
      // The target's connection ending before its body did means the controller must cut its client too.
      this.#abort(ErrorCode.CANCEL, 'target closed the connection mid-response');
      return;
    }
    if (err.code === 'UND_ERR_INVALID_ARG' || err.code === 'UND_ERR_NOT_SUPPORTED') {
      // parseStreamMeta and dispatchable refuse what undici is known to refuse; anything they missed
      // still resets only this stream, never the agent.
      this.log.warn({ err: err.message }, 'stream refused: undici refused the request head');
      this.#abort(ErrorCode.PROTOCOL_ERROR, `request head refused: ${err.message}`.slice(0, 200));
      return;
    }
    // Nothing of the body has been taken from the stream yet: the request can be sent again whole.
    const replayable = !this.#bodyStarted && this.#decoder.idle;
    const idempotent = isIdempotent(this.meta.head.method);
    if (err.code === 'UND_ERR_SOCKET' && err.message === 'bad response' && replayable && idempotent) {
      // undici refuses a 100 Continue that no Expect asked for, which RFC 9110 §15.2 says a client
      // must take; node:http relays it, so it serves this request instead. Only an idempotent one:
      // undici sends a head with a body only with its first bytes, so a request dropped here had no
      // body, reached the target whole, and may have been acted on (a POST must not run twice).
      this.log.debug({ target: this.meta.target }, 'target sent 100 Continue unasked; node:http serves it');
      this.#detach();
      this.fallback();
      return;
    }
    // A kept-alive connection the target closed just as we reused it: the request never reached the
    // application, so it is sent once more, on a fresh connection. undici does not say whether the
    // connection was fresh, and a target that drops a fresh one unanswered may have acted on the
    // request, so only an idempotent one is sent again (RFC 9110 §9.2.2; nginx's proxy_next_upstream
    // does the same): a POST dropped unanswered is the client's 502, never done twice.
    if (isClosedUnderUs(err) && replayable && !this.#retried && idempotent) {
      this.#retried = true;
      this.#abortRequest = null;
      // The replay's body is made now, not when it is dispatched: body bytes that come from the stream
      // before then wait in it, where they would otherwise go to the failed attempt's and be lost.
      this.#newBody();
      // Once undici is done with the closed connection: dispatched from inside its error callback, the
      // request would be queued on that client in the middle of its cleanup.
      setImmediate(this.#retry);
      return;
    }
    if (err.code === 'UND_ERR_SOCKET' && err.message === 'bad upgrade') {
      // A 101 to a request that asked for no upgrade: the target now speaks something else on that
      // connection, which undici dropped. As on the node:http path, a HEAD 101 and FIN tell the
      // controller, which answers its client 502 at once rather than wait for a response that will
      // never come. undici keeps the 101's fields to itself; the controller does not use them.
      this.log.warn({ target: this.meta.target }, 'target switched protocols unasked');
      this.#status = 101;
      this.stream.write(encodeHead({ status: 101, statusText: 'Switching Protocols', headers: [] }));
      this.stream.end();
      this.#finish('switched');
      return;
    }
    if (err.code === 'UND_ERR_SOCKET' && err.message === 'bad response') {
      // A 100 after body bytes left, or to a request that must not be sent twice, so node:http cannot
      // take over: the client gets a 502 now.
      this.log.warn({ target: this.meta.target }, 'target sent 100 Continue unasked; not sent again');
      this.#abort(ErrorCode.TARGET_UNREACHABLE, `${this.meta.target}: sent 100 Continue unasked`);
      return;
    }
    const [code, reason] = classify(nodeError(err, this.target.connectTimeoutMs), this.meta.target);
    const what = code === ErrorCode.TARGET_TLS ? 'target TLS failed' : 'target request failed';
    this.log.warn({ target: this.meta.target, err: err.message, code: err.code }, what);
    this.#abort(code, reason);
  }

  readonly #retry = (): void => {
    if (this.#done) return;
    this.#dispatch();
    if (this.stream.readableEnded) this.#body?.push(null);
  };

  /** Leaves the stream to another delivery: no listener of this one stays, nothing is counted. */
  #detach(): void {
    this.#done = true;
    this.#body?.destroy();
    this.stream.off('data', this.#onStreamData);
    this.stream.off('end', this.#onStreamEnd);
    this.stream.off('error', this.#onStreamError);
    this.stream.off('close', this.#onStreamClose);
    this.stream.off('drain', this.#onStreamDrain);
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
    this.stream.off('drain', this.#onStreamDrain);
    if (!this.#complete) {
      this.#abortRequest?.(new Error('the stream is gone'));
      this.#body?.destroy();
    }
    // A stream this side ended cleanly (closed by the peer, or ended after an unasked 101) is left to
    // close on its own; any other end tears it down.
    if (how !== 'closed' && how !== 'switched') this.stream.destroy();
    this.observer?.streamDone('http', this.#status, this.#reset, this.#error);
    this.log.debug({ how, ms: Math.round(performance.now() - this.#started) }, 'stream finished');
  }
}

/** undici's errors in the terms classify knows from node:http: its connect deadline, a closed connection. */
function nodeError(err: NodeJS.ErrnoException, connectTimeoutMs: number): NodeJS.ErrnoException {
  if (err.code === 'UND_ERR_CONNECT_TIMEOUT') return connectTimeoutError(connectTimeoutMs);
  if (err.code === 'UND_ERR_SOCKET') {
    const out: NodeJS.ErrnoException = new Error(err.message);
    out.code = 'ECONNRESET';
    return out;
  }
  return err;
}

/** RFC 9110 §9.2.2: the methods a client may send again without asking the user. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** Whether a request dropped unanswered may be sent again (both HTTP/1.1 paths ask this). */
export function isIdempotent(method: string): boolean {
  return IDEMPOTENT.has(method);
}

/** The target closed or reset the connection while the request was on it, before any answer. */
function isClosedUnderUs(err: NodeJS.ErrnoException): boolean {
  return err.code === 'ECONNRESET' || (err.code === 'UND_ERR_SOCKET' && err.message === 'other side closed');
}

function ignore(): void {}

/** undici's raw header buffers as the byte strings a JSON HEAD carries. */
function latin1(raw: readonly Buffer[]): string[] {
  const out = new Array<string>(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw[i]!.toString('latin1');
  return out;
}
