// The agent's half of an exchange with an `h2c://` target (gRPC, or any HTTP/2 cleartext service): the
// envelope's request head, body and trailers become one HTTP/2 request on a session shared by every
// stream to that target, and the HTTP/2 response comes back as HEAD, BODY and TRAILERS records. A
// stream the controller resets (its client cancelled, a deadline passed) resets the HTTP/2 stream at
// the target with CANCEL, which is how a gRPC server learns of a cancelled call.
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect,
  constants,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
} from 'node:http2';
import { connect as netConnect, isIPv6, type LookupFunction, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { ErrorCode } from '../protocol/constants.js';
import type { DeliverObserver } from './deliver-types.js';
import { EnvelopeDecoder, encodeHead, encodeTrailers } from '../proxy/envelope.js';
import type { HttpStreamMeta } from '../proxy/meta.js';
import { corkForThisTick, writeBody } from '../proxy/relay.js';
import { armConnectTimeout, classify } from '../proxy/target.js';

type TunnelStream = Duplex & { reset(code: number, reason: string): void };

/** HTTP/2 sessions the agent keeps open at once, one per target; past it the least recently used closes. */
export const MAX_H2_SESSIONS = 256;
/** A session with no open stream for this long is closed. */
const SESSION_IDLE_MS = 60_000;

// RFC 9113 §8.2.2: fields an HTTP/2 message must not carry (Node throws on them); `host` becomes
// `:authority`, and `expect` is answered by the agent (HTTP/2 has its own flow control).
const NOT_FORWARDED = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
  'host',
  'te',
  'expect',
]);

// The fields of a gRPC status (gRPC over HTTP/2, "Responses"): trailers, also in a trailers-only response.
const GRPC_STATUS_FIELDS = new Set(['grpc-status', 'grpc-message', 'grpc-status-details-bin']);

interface Entry {
  session: ClientHttp2Session;
  open: number;
}

/**
 * One HTTP/2 session per h2c target (host:port), opened on first use and reused by every stream to it.
 * A session that received GOAWAY or closed is forgotten at once, so the next stream dials afresh while
 * the streams it still carries finish.
 */
export class H2Sessions {
  readonly #entries = new Map<string, Entry>();
  readonly #max: number;

  constructor(max = MAX_H2_SESSIONS) {
    this.#max = max;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** A stream on the session to host:port; it counts as open until its 'close'. Throws as request() does. */
  request(
    host: string,
    port: number,
    lookup: LookupFunction | undefined,
    connectTimeoutMs: number,
    headers: OutgoingHttpHeaders,
  ): ClientHttp2Stream {
    const key = `${host}:${port}`;
    let entry = this.#entries.get(key);
    if (entry !== undefined && (entry.session.closed || entry.session.destroyed)) {
      this.#forget(key, entry.session);
      entry = undefined;
    }
    if (entry === undefined) entry = this.#open(key, host, port, lookup, connectTimeoutMs);
    else {
      // Most recently used last: the first entry is the one to close when the map is full.
      this.#entries.delete(key);
      this.#entries.set(key, entry);
    }
    const stream = entry.session.request(headers, { endStream: false, waitForTrailers: true });
    const used = entry;
    used.open++;
    used.session.setTimeout(0);
    stream.once('close', () => {
      if (--used.open === 0 && !used.session.closed) used.session.setTimeout(SESSION_IDLE_MS);
    });
    return stream;
  }

  #open(
    key: string,
    host: string,
    port: number,
    lookup: LookupFunction | undefined,
    connectTimeoutMs: number,
  ): Entry {
    if (this.#entries.size >= this.#max) {
      const [oldKey, oldest] = this.#entries.entries().next().value as [string, Entry];
      this.#forget(oldKey, oldest.session);
      oldest.session.close();
    }
    const authority = `http://${isIPv6(host) ? `[${host}]` : host}:${port}`;
    const session = connect(authority, {
      // The socket is ours, so that the connect deadline and the policy's DNS check apply to it.
      createConnection: () => {
        const socket: Socket = netConnect({ host, port, lookup, noDelay: true });
        armConnectTimeout(socket, connectTimeoutMs);
        return socket;
      },
    });
    const entry: Entry = { session, open: 0 };
    this.#entries.set(key, entry);
    // Each stream reports the failure that concerns it; the session's own is only its end.
    session.on('error', ignore);
    session.once('goaway', () => this.#forget(key, session));
    session.once('close', () => this.#forget(key, session));
    session.on('timeout', () => {
      if (entry.open === 0) session.close();
    });
    return entry;
  }

  #forget(key: string, session: ClientHttp2Session): void {
    if (this.#entries.get(key)?.session === session) this.#entries.delete(key);
  }

  /** Closes every session at once (the agent is stopping). */
  destroy(): void {
    for (const { session } of this.#entries.values()) session.destroy();
    this.#entries.clear();
  }
}

export interface H2Target {
  host: string;
  port: number;
  lookup: LookupFunction | undefined;
  connectTimeoutMs: number;
  sessions: H2Sessions;
}

/** Serves one stream whose target is h2c://. Never throws; failures reset the stream with a code. */
export function deliverH2(
  stream: TunnelStream,
  meta: HttpStreamMeta,
  target: H2Target,
  log: Logger,
  observer?: DeliverObserver,
): void {
  new H2Delivery(stream, meta, target, log, observer).start();
}

class H2Delivery {
  #req: ClientHttp2Stream | null = null;
  #status = 0;
  #reset = -1;
  #error: Error | undefined;
  #done = false;
  #ended = false;
  #trailers: OutgoingHttpHeaders = {};
  readonly #decoder: EnvelopeDecoder;

  constructor(
    private readonly stream: TunnelStream,
    private readonly meta: HttpStreamMeta,
    private readonly target: H2Target,
    private readonly log: Logger,
    private readonly observer: DeliverObserver | undefined,
  ) {
    this.#decoder = new EnvelopeDecoder('request', {
      onBody: (piece) => {
        if (this.#req !== null && !this.#req.write(piece)) this.stream.pause();
      },
      onTrailers: (raw) => addFields(this.#trailers, raw),
    });
  }

  start(): void {
    const { head } = this.meta;
    const headers = requestHeaders(this.meta, this.target);
    let req: ClientHttp2Stream;
    try {
      req = this.target.sessions.request(
        this.target.host,
        this.target.port,
        this.target.lookup,
        this.target.connectTimeoutMs,
        headers,
      );
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      this.log.warn({ err: e.message, code: e.code }, 'stream refused: HTTP/2 request refused');
      this.#abort(ErrorCode.PROTOCOL_ERROR, `request refused: ${e.message}`.slice(0, 200));
      return;
    }
    this.#req = req;
    // An HTTP/1.1 client waiting for 100 Continue: HTTP/2 flow control does that job towards the target.
    if (head.headers.some((v, i) => i % 2 === 0 && v.toLowerCase() === 'expect')) {
      this.stream.write(encodeHead({ status: 100, statusText: 'Continue', headers: [] }));
    }
    req.on('response', this.#onResponse);
    req.on('data', this.#onTargetData);
    req.on('trailers', this.#onTargetTrailers);
    req.on('end', this.#onTargetEnd);
    req.on('wantTrailers', this.#onWantTrailers);
    req.on('drain', this.#onRequestDrain);
    req.on('error', this.#onTargetError);
    req.on('close', this.#onTargetClose);
    this.stream.on('data', this.#onStreamData);
    this.stream.on('end', this.#onStreamEnd);
    this.stream.on('drain', this.#onStreamDrain);
    this.stream.on('error', this.#onStreamError);
    this.stream.on('close', this.#onStreamClose);
  }

  // --- request direction: stream → target ---

  readonly #onStreamData = (chunk: Buffer): void => {
    try {
      this.#decoder.push(chunk);
    } catch (err) {
      this.#abort(ErrorCode.PROTOCOL_ERROR, (err as Error).message.slice(0, 200));
    }
  };

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

  /** The request body is sent: its trailers (an empty field section when the client sent none) end it. */
  readonly #onWantTrailers = (): void => {
    this.#req?.sendTrailers(this.#trailers);
  };

  readonly #onStreamError = (err: Error): void => {
    // The controller reset the stream: its client cancelled or went away. The target hears CANCEL.
    this.#error = err;
    this.log.debug({ err: err.message }, 'stream reset by the controller');
    this.#finish(true);
  };

  readonly #onStreamClose = (): void => {
    this.#finish(false);
  };

  // --- response direction: target → stream ---

  readonly #onResponse = (headers: IncomingHttpHeaders, flags: number): void => {
    const status = Number(headers[':status']);
    this.#status = status;
    const raw = rawFields(headers);
    // gRPC's trailers-only response (an error status with no message) is one HEADERS frame that ends
    // the stream. The controller can only end its client's stream after the head it writes, so the
    // status fields would arrive as headers of a stream that then ends with no trailers, which a gRPC
    // client reads as a missing status (INTERNAL). They travel as the trailers they stand for instead.
    if ((flags & constants.NGHTTP2_FLAG_END_STREAM) !== 0 && headers['grpc-status'] !== undefined) {
      const head: string[] = [];
      const trailers: string[] = [];
      for (let i = 0; i + 1 < raw.length; i += 2) {
        (GRPC_STATUS_FIELDS.has(raw[i]!) ? trailers : head).push(raw[i]!, raw[i + 1]!);
      }
      this.stream.write(encodeHead({ status, statusText: '', headers: head }));
      this.stream.write(encodeTrailers(trailers));
      return;
    }
    this.stream.write(encodeHead({ status, statusText: '', headers: raw }));
  };

  readonly #onTargetData = (chunk: Buffer): void => {
    corkForThisTick(this.stream);
    if (!writeBody(this.stream, chunk)) this.#req?.pause();
  };

  readonly #onStreamDrain = (): void => {
    this.#req?.resume();
  };

  readonly #onTargetTrailers = (trailers: IncomingHttpHeaders): void => {
    const raw = rawFields(trailers);
    if (raw.length > 0) this.stream.write(encodeTrailers(raw));
  };

  readonly #onTargetEnd = (): void => {
    this.#ended = true;
    this.stream.end();
  };

  readonly #onTargetError = (err: NodeJS.ErrnoException): void => {
    if (this.#done) return;
    if (this.#status === 0) {
      const [code, reason] = classify(err, this.meta.target);
      this.log.warn({ target: this.meta.target, err: err.message, code: err.code }, 'target request failed');
      this.#abort(code, reason);
      return;
    }
    this.#abort(ErrorCode.CANCEL, 'target reset the stream mid-response');
  };

  readonly #onTargetClose = (): void => {
    if (this.#done || this.#ended) return;
    // Closed with neither an end nor an error: the target reset the stream (RST_STREAM NO_ERROR or
    // CANCEL), or the session went away under it.
    const code = this.#req?.rstCode ?? constants.NGHTTP2_CANCEL;
    if (this.#status === 0) {
      this.log.warn({ target: this.meta.target, rstCode: code }, 'target reset the stream');
      this.#abort(ErrorCode.TARGET_UNREACHABLE, `${this.meta.target}: reset the stream (code ${code})`);
    } else this.#abort(ErrorCode.CANCEL, 'target reset the stream mid-response');
  };

  #abort(code: number, reason: string): void {
    if (!this.stream.destroyed) {
      if (this.#reset < 0) this.#reset = code;
      this.stream.reset(code, reason);
    }
    this.#finish(true);
  }

  /** `teardown`: the exchange failed, so the tunnel stream is destroyed rather than left to close. */
  #finish(teardown: boolean): void {
    if (this.#done) return;
    this.#done = true;
    const req = this.#req;
    if (req !== null && !req.closed && !(this.#ended && req.writableFinished)) {
      req.on('error', ignore);
      req.close(constants.NGHTTP2_CANCEL);
    }
    if (teardown && !this.stream.destroyed) this.stream.destroy();
    this.observer?.streamDone('http', this.#status, this.#reset, this.#error);
  }
}

/** The HTTP/2 request head for the envelope's: pseudo-header fields, then the fields HTTP/2 allows. */
function requestHeaders(meta: HttpStreamMeta, target: H2Target): OutgoingHttpHeaders {
  const raw = meta.head.headers;
  let authority: string | undefined;
  const fields: OutgoingHttpHeaders = {};
  const kept: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (name === 'host') authority ??= raw[i + 1]!;
    if (NOT_FORWARDED.has(name)) continue;
    kept.push(name, raw[i + 1]!);
  }
  addFields(fields, kept);
  return {
    [constants.HTTP2_HEADER_METHOD]: meta.head.method,
    [constants.HTTP2_HEADER_PATH]: meta.head.path,
    [constants.HTTP2_HEADER_SCHEME]: 'http',
    [constants.HTTP2_HEADER_AUTHORITY]:
      authority ?? `${isIPv6(target.host) ? `[${target.host}]` : target.host}:${target.port}`,
    ...fields,
    // The agent relays response trailers (gRPC's status is one), so it accepts them (RFC 9113 §8.2.2).
    te: 'trailers',
  };
}

/** Adds a raw list's fields to `out`, repeated names as arrays (set-cookie, grpc metadata). */
function addFields(out: OutgoingHttpHeaders, raw: readonly string[]): void {
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    const value = raw[i + 1]!;
    const had = out[name];
    if (had === undefined) out[name] = value;
    else if (Array.isArray(had)) had.push(value);
    else out[name] = [String(had), value];
  }
}

/** A received field section as a raw list, without its pseudo-header fields. */
function rawFields(headers: IncomingHttpHeaders): string[] {
  const raw: string[] = [];
  for (const [name, value] of Object.entries(headers)) {
    if (name.startsWith(':') || value === undefined) continue;
    if (Array.isArray(value)) for (const v of value) raw.push(name, v);
    else raw.push(name, String(value));
  }
  return raw;
}

function ignore(): void {}
