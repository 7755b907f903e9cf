// The controller's half of one HTTP exchange (docs/http-over-streams.md): the client's request body goes
// into a tunnel stream as records, the target's response comes back as records and is written to the
// client. Nothing is buffered beyond one chunk in either direction: `write()` returning false pauses the
// source and `drain` resumes it, at both hops.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { constants as h2, type ServerHttp2Stream } from 'node:http2';
import type { Duplex } from 'node:stream';
import {
  type ReasonCode,
  SluiceError,
  type SluiceErrorCode,
  StreamResetError,
  streamErrorCode,
} from '../errors.js';
import { ErrorCode } from '../protocol/constants.js';
import { EnvelopeDecoder, EnvelopeError, encodeTrailers, type ResponseHead } from './envelope.js';
import { forwardResponseHeaders } from './headers.js';
import { corkForThisTick, writeBody } from './relay.js';

/** How an exchange ended, for the request log and for the caller's retry decision. */
export type Outcome =
  /** The response was delivered whole. */
  | { kind: 'done' }
  /** Nothing reached the client yet: the caller answers with an error page (or retries). */
  | {
      kind: 'failed';
      status: 408 | 502 | 503 | 504;
      code: ReasonCode;
      reason: string;
      retryable: boolean;
      detail: string;
    }
  /** The client went away; the stream was reset with CANCEL. */
  | { kind: 'client-aborted' }
  /** The response broke after its head was sent; the client connection was cut. */
  | { kind: 'broken'; detail: string };

export interface ForwardOptions {
  requestId: string;
  via: string;
  /** Time until the target's final response head; then 504. 0 turns it off. */
  responseTimeoutMs: number;
  /** The request was a HEAD: the client gets no body whatever the target sends. */
  headRequest: boolean;
  /**
   * Until the target's final response head, a request body that sends no byte for this long is answered
   * 408 and its stream reset. 0 turns it off. It runs only while this side reads: not while the body
   * is paused for backpressure, nor before a 100 Continue the client waits for.
   */
  bodyIdleTimeoutMs: number;
  /** The Strict-Transport-Security value to add when the target sent none; absent: none is added. */
  hsts?: string | undefined;
}

export interface ExchangeStats {
  /** Request body bytes sent towards the target. */
  bytesIn: number;
  /** Response body bytes written to the client. */
  bytesOut: number;
  /** Status sent to the client, 0 while none. */
  status: number;
  /** The SLUICE_ERR_* code of the last error the stream itself failed with (not its session's), if any. */
  code?: SluiceErrorCode;
}

/**
 * Runs one exchange over `stream` (opened with the request's head as metadata). Resolves once the
 * exchange is over, never rejects. `stats` is updated as bytes move.
 */
export function forwardHttp(
  req: IncomingMessage,
  res: ServerResponse,
  stream: Duplex & { reset(code: number, reason: string): void },
  options: ForwardOptions,
  stats: ExchangeStats,
): Promise<Outcome> {
  return new Promise((resolve) => {
    new Exchange(req, res, stream, options, stats, resolve).start();
  });
}

class Exchange {
  #finalHead = false;
  #bodyStarted = false;
  #settled = false;
  #timer: NodeJS.Timeout | null = null;
  #bodyTimer: NodeJS.Timeout | null = null;
  /** The client sent `Expect: 100-continue` and has not been told to go on yet. */
  #awaitingContinue: boolean;
  readonly #hasBody: boolean;
  readonly #decoder: EnvelopeDecoder;

  constructor(
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly stream: Duplex & { reset(code: number, reason: string): void },
    private readonly options: ForwardOptions,
    private readonly stats: ExchangeStats,
    private readonly resolve: (outcome: Outcome) => void,
  ) {
    this.#awaitingContinue = req.headers.expect?.toLowerCase() === '100-continue';
    // RFC 9112 §6.3: a request with neither field has no body, and needs no body timer.
    this.#hasBody =
      req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
    this.#decoder = new EnvelopeDecoder('response', {
      onHead: (head) => this.#onHead(head),
      onBody: (piece) => this.#onBody(piece),
      onTrailers: (raw) => this.#onTrailers(raw),
    });
  }

  start(): void {
    const { req, res, stream } = this;
    req.on('data', this.#onRequestData);
    req.on('end', this.#onRequestEnd);
    stream.on('drain', this.#onStreamDrain);
    stream.on('data', this.#onStreamData);
    stream.on('end', this.#onStreamEnd);
    stream.on('error', this.#onStreamError);
    stream.on('close', this.#onStreamClose);
    res.on('drain', this.#onResponseDrain);
    res.on('close', this.#onResponseClose);
    if (this.options.responseTimeoutMs > 0) {
      this.#timer = setTimeout(this.#onTimeout, this.options.responseTimeoutMs);
    }
    // A retry on another tunnel (the first one refused the stream unprocessed) can find the client
    // gone already, or a bodyless request already read to its end: its 'end' will not come again, so
    // end the stream now.
    if (res.destroyed) {
      this.#onResponseClose();
      return;
    }
    if (req.readableEnded) this.#onRequestEnd();
    else this.#armBodyTimer();
  }

  // --- request direction: client → stream ---

  readonly #onRequestData = (chunk: Buffer): void => {
    this.#bodyStarted = true;
    this.stats.bytesIn += chunk.length;
    if (writeBody(this.stream, chunk)) {
      // A client that sent its body without waiting for the 100 is not waiting any more.
      this.#awaitingContinue = false;
      this.#armBodyTimer();
    } else {
      // The wait that follows is the target's, not the client's.
      this.req.pause();
      this.#clearBodyTimer();
    }
  };

  readonly #onStreamDrain = (): void => {
    this.req.resume();
    this.#armBodyTimer();
  };

  readonly #onRequestEnd = (): void => {
    this.#clearBodyTimer();
    if (this.stream.destroyed) return;
    if (this.req.rawTrailers.length > 0) this.stream.write(encodeTrailers(this.req.rawTrailers));
    this.stream.end();
  };

  // --- response direction: stream → client ---

  readonly #onStreamData = (chunk: Buffer): void => {
    // A frame split across two tunnel reads arrives as two pieces, and record boundaries do not follow
    // frame boundaries: corked for the tick, what one read brought leaves in one write, which halves
    // the writes of a bulk download.
    corkForThisTick(this.res);
    try {
      this.#decoder.push(chunk);
    } catch (err) {
      this.#protocolError(err);
    }
  };

  readonly #onStreamEnd = (): void => {
    try {
      this.#decoder.finish();
    } catch (err) {
      this.#protocolError(err);
      return;
    }
    // RFC 9113 §8.1: the target answered before the client finished its body. On HTTP/2 that stream
    // stays half-closed, its upload stalled on flow control once the window fills, holding one of the
    // connection's streams for ever; RST_STREAM(NO_ERROR) after the complete response tells the client
    // to stop sending, without error. (Node does so itself only for a request body nobody read.) It goes
    // one turn after the response's last frame is queued, as Node's own close does: the trailers, which
    // Node's compat layer sends from its 'wantTrailers' listener (a reset queued in that turn goes out
    // first and loses them), or the HEADERS that end a response with no body.
    const h2stream = this.#http2Stream();
    if (h2stream === null || this.req.complete) this.res.end();
    else if (this.res.headersSent) {
      h2stream.once('wantTrailers', this.#stopUploadSoon);
      this.res.end();
    } else this.res.end(this.#stopUploadSoon);
  };

  readonly #stopUploadSoon = (): void => {
    setImmediate(this.#stopUpload);
  };

  #http2Stream(): ServerHttp2Stream | null {
    if (this.req.httpVersionMajor !== 2) return null;
    return (this.res as unknown as { stream: ServerHttp2Stream }).stream;
  }

  readonly #stopUpload = (): void => {
    if (this.req.complete) return;
    const stream = this.#http2Stream();
    if (stream !== null && !stream.destroyed && !stream.closed) stream.close(h2.NGHTTP2_NO_ERROR);
  };

  // The decoder hands on every record of a chunk, also those after one that settled the exchange (an
  // unasked 101, a head Node refused): they must not reach a response already answered with a 502.
  #onHead(head: ResponseHead): void {
    if (this.#settled) return;
    const { req, res } = this;
    if (head.status === 101) {
      // The request asked for no upgrade (those go through forwardUpgrade), so the target speaks some
      // other protocol on a connection the client still reads as HTTP/1.1: nothing can be relayed.
      this.stream.reset(ErrorCode.CANCEL, 'unrequested 101');
      const reason = 'the target switched protocols on a request that asked for no upgrade';
      this.#fail(502, 'bad_response', reason, '101', false);
      return;
    }
    if (head.status < 200) {
      this.#interim(head);
      return;
    }
    this.#clearTimer();
    this.#clearBodyTimer();
    const headers = forwardResponseHeaders(head.headers, {
      via: this.options.via,
      requestId: this.options.requestId,
      httpVersion: '1.1',
      upgrade: false,
      hsts: this.options.hsts,
    });
    try {
      // Node validates names, values and the reason phrase; a target that sends what it refuses gets
      // a 502 rather than a half-written head.
      // HTTP/2 has no reason phrase (RFC 9113 §8.3.2); Node warns when given one.
      if (head.statusText !== undefined && isReasonPhrase(head.statusText) && req.httpVersionMajor !== 2) {
        res.writeHead(head.status, head.statusText, headers);
      } else {
        res.writeHead(head.status, headers);
      }
    } catch (err) {
      // Node set the reason phrase before it refused the headers; the error page must not keep it.
      if (req.httpVersionMajor !== 2) res.statusMessage = '';
      const reason = 'the target sent a response head that cannot be relayed';
      this.#fail(502, 'bad_response', reason, errorDetail(err), false);
      this.stream.reset(ErrorCode.PROTOCOL_ERROR, 'response head not relayable');
      return;
    }
    this.#finalHead = true;
    this.stats.status = head.status;
    // Node sends the head with the first body write, which an event stream or a slow body must not
    // hold back. The flush waits for the end of this tick: frames that arrived together (head, body,
    // end) are handled by then, and go out in one write.
    process.nextTick(flushHead, res);
  }

  #interim(head: ResponseHead): void {
    const { res } = this;
    if (head.status === 100) {
      res.writeContinue();
      if (this.#awaitingContinue) {
        this.#awaitingContinue = false;
        this.#armBodyTimer();
      }
    } else if (head.status === 103) {
      const hints: Record<string, string[]> = {};
      for (let i = 0; i + 1 < head.headers.length; i += 2) {
        const name = head.headers[i]!.toLowerCase();
        (hints[name] ??= []).push(head.headers[i + 1]!);
      }
      // Early hints are advisory (RFC 8297): one that Node refuses to write is dropped, not fatal.
      if (hints.link !== undefined) {
        try {
          res.writeEarlyHints(hints);
        } catch {
          /* dropped */
        }
      }
    }
    // 102 Processing is deprecated (RFC 9110 §15.2) and other 1xx codes have no meaning here: dropped.
  }

  #onBody(piece: Buffer): void {
    if (this.#settled || this.options.headRequest) return;
    this.stats.bytesOut += piece.length;
    if (!this.res.write(piece)) this.stream.pause();
  }

  readonly #onResponseDrain = (): void => {
    this.stream.resume();
  };

  #onTrailers(raw: string[]): void {
    if (this.#settled) return;
    const pairs: [string, string][] = [];
    for (let i = 0; i + 1 < raw.length; i += 2) pairs.push([raw[i]!, raw[i + 1]!]);
    try {
      // Node's HTTP/2 response reads its trailers as an object (an array would give fields 0, 1, ...).
      if (this.req.httpVersionMajor === 2) this.res.addTrailers(trailerObject(pairs));
      else this.res.addTrailers(pairs);
    } catch {
      // A trailer Node refuses (invalid characters) is dropped, as it would be for a header.
    }
  }

  // --- failures and endings ---

  readonly #onStreamError = (err: Error): void => {
    // The whole response is already with the client (a reset racing our end): nothing to undo.
    if (this.res.writableEnded) return;
    this.stats.code = streamErrorCode(err) ?? this.stats.code;
    if (this.#finalHead) {
      this.#broken(`stream failed mid-response: ${err.message}`);
      return;
    }
    const failure = failureBeforeAnswer(err);
    // A stream the agent never processed may go to another tunnel, if no body byte was consumed.
    const retryable = failure.unprocessed && !this.#bodyStarted;
    this.#fail(failure.status, failure.code, failure.reason, err.message, retryable);
  };

  readonly #onStreamClose = (): void => {
    // A stream that closes with neither end nor error was destroyed here; the path that did it settled.
    if (!this.#settled && !this.res.writableFinished && !this.#finalHead) {
      const reason = 'the tunnel stream closed before the target answered';
      this.#fail(502, 'stream_broken', reason, 'stream closed', false);
    }
  };

  readonly #onResponseClose = (): void => {
    // An HTTP/2 response reads as finished once its stream closed, also when the client reset it
    // (a gRPC cancel or deadline): only one this side ended is done.
    if (this.res.writableFinished && this.res.writableEnded) {
      // The response is complete. If the client never finished its body (the target answered early),
      // the request half of the stream has no end: reset it so the agent and the target let go.
      if (!this.stream.destroyed && !this.req.complete) this.stream.reset(ErrorCode.CANCEL, 'response done');
      this.#settle({ kind: 'done' });
      return;
    }
    if (!this.#settled) {
      this.stream.reset(ErrorCode.CANCEL, 'client closed the connection');
      this.#settle({ kind: 'client-aborted' });
    }
  };

  #armBodyTimer(): void {
    const ms = this.options.bodyIdleTimeoutMs;
    if (ms === 0 || !this.#hasBody || this.#awaitingContinue || this.#finalHead || this.#settled) return;
    if (this.req.complete) return;
    if (this.#bodyTimer === null) this.#bodyTimer = setTimeout(this.#onBodyIdle, ms);
    else this.#bodyTimer.refresh();
  }

  #clearBodyTimer(): void {
    if (this.#bodyTimer !== null) clearTimeout(this.#bodyTimer);
    this.#bodyTimer = null;
  }

  readonly #onBodyIdle = (): void => {
    this.#bodyTimer = null;
    if (this.#finalHead || this.#settled || this.req.complete) return;
    // Queued behind a pipelined response, the body may wait on Node, which stops reading the
    // connection while a response before it is held up: not the client's silence, so wait on.
    if (this.res.socket === null) {
      this.#armBodyTimer();
      return;
    }
    const seconds = this.options.bodyIdleTimeoutMs / 1000;
    // The reset lets the agent and the target go at once: a stalled upload holds neither.
    this.stream.reset(ErrorCode.CANCEL, 'request body idle');
    this.#fail(
      408,
      'body_timeout',
      `the request body sent nothing for ${seconds}s`,
      'body idle timeout',
      false,
    );
  };

  readonly #onTimeout = (): void => {
    this.#timer = null;
    if (this.#finalHead || this.#settled) return;
    const seconds = this.options.responseTimeoutMs / 1000;
    this.stream.reset(ErrorCode.CANCEL, 'response timeout');
    this.#fail(504, 'timeout', `the target did not answer within ${seconds}s`, 'response timeout', false);
  };

  #protocolError(err: unknown): void {
    const detail = errorDetail(err);
    const reason = err instanceof EnvelopeError ? err.message : 'bad record';
    this.stream.reset(ErrorCode.PROTOCOL_ERROR, reason.slice(0, 200));
    if (this.#finalHead) this.#broken(`agent broke the record format: ${detail}`);
    else this.#fail(502, 'bad_response', 'the agent sent a malformed response', detail, false);
  }

  #fail(
    status: 408 | 502 | 503 | 504,
    code: ReasonCode,
    reason: string,
    detail: string,
    retryable: boolean,
  ): void {
    this.#settle({ kind: 'failed', status, code, reason, retryable, detail });
  }

  #broken(detail: string): void {
    // Past the head, the only honest signal left is to cut the connection, as nginx does: the client
    // sees a truncated body (no final chunk, or fewer bytes than Content-Length), never a forged end.
    cutResponse(this.res);
    this.#settle({ kind: 'broken', detail });
  }

  #settle(outcome: Outcome): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#clearTimer();
    this.#clearBodyTimer();
    const { req, res, stream } = this;
    req.off('data', this.#onRequestData);
    req.off('end', this.#onRequestEnd);
    stream.off('drain', this.#onStreamDrain);
    stream.off('data', this.#onStreamData);
    stream.off('end', this.#onStreamEnd);
    stream.off('close', this.#onStreamClose);
    res.off('drain', this.#onResponseDrain);
    res.off('close', this.#onResponseClose);
    // Late errors of a stream we are done with are expected (a reset racing our end); keep a listener.
    stream.off('error', this.#onStreamError);
    stream.on('error', ignore);
    if (outcome.kind !== 'done' && !stream.destroyed) stream.destroy();
    // A paused request body would keep the client's connection stuck; let Node read and discard it
    // (as nginx discards a body it will not use): after a failure, and after a whole answer that came
    // before the client finished its upload, where a kept-alive HTTP/1.1 connection must read past
    // the rest of the body to serve its next request. Not when the request may be retried on
    // another tunnel: its body has not been read yet.
    if (outcome.kind === 'done' || (outcome.kind === 'failed' && !outcome.retryable)) req.resume();
    this.resolve(outcome);
  }

  #clearTimer(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }
}

function ignore(): void {}

/**
 * Ends a response whose head is already out as broken, never as complete. On HTTP/1.x that is the
 * connection cut. On HTTP/2 it is RST_STREAM(INTERNAL_ERROR): a plain destroy() of Node's
 * compatibility response resets the stream with NO_ERROR, which clients (curl, Node's http2 client)
 * take as the end of a whole body (RFC 9113 §8.1 gives NO_ERROR that meaning after a full response),
 * so a truncated download would pass as complete.
 */
export function cutResponse(res: ServerResponse): void {
  const stream = (res as unknown as { stream?: ServerHttp2Stream }).stream;
  if (stream !== undefined && !stream.destroyed) stream.close(h2.NGHTTP2_INTERNAL_ERROR);
  res.destroy();
}

/**
 * The page for a stream that failed before the target's final answer, by its RST code
 * (docs/http-over-streams.md, "Failures"). `unprocessed`: the agent refused it without acting on it.
 */
export function failureBeforeAnswer(err: Error): {
  status: 502 | 503 | 504;
  code: ReasonCode;
  reason: string;
  unprocessed: boolean;
} {
  switch (err instanceof SluiceError ? err.wireCode : undefined) {
    case ErrorCode.TARGET_DENIED: {
      const reason = "the agent's policy does not allow this route's target";
      return { status: 502, code: 'target_denied', reason, unprocessed: false };
    }
    case ErrorCode.TARGET_UNREACHABLE: {
      const reason = 'the agent could not connect to the target';
      return { status: 502, code: 'target_unreachable', reason, unprocessed: false };
    }
    case ErrorCode.TARGET_TIMEOUT: {
      const reason = 'the target did not answer in time';
      return { status: 504, code: 'target_timeout', reason, unprocessed: false };
    }
    case ErrorCode.TARGET_TLS: {
      // The agent's reason names what failed (an unknown issuer, a name the certificate lacks): it is
      // about the target's certificate, not the agent's policy, and it is what the operator must fix.
      const detail = err instanceof StreamResetError && err.reason !== '' ? `: ${err.reason}` : '';
      const reason = `TLS to the target failed${detail}`;
      return { status: 502, code: 'target_tls', reason, unprocessed: false };
    }
    case ErrorCode.REFUSED_STREAM:
      return { status: 503, code: 'agent_draining', reason: 'the agent is shutting down', unprocessed: true };
    case ErrorCode.OVERLOAD:
      return { status: 503, code: 'overloaded', reason: 'the tunnel is overloaded', unprocessed: true };
    default: {
      const reason = 'the tunnel stream broke before the target answered';
      return { status: 502, code: 'stream_broken', reason, unprocessed: false };
    }
  }
}

/** Trailer fields by lower-case name, repeated ones joined as a list (RFC 9110 §5.3). */
function trailerObject(pairs: readonly [string, string][]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of pairs) {
    const key = name.toLowerCase();
    out[key] = out[key] === undefined ? value : `${out[key]}, ${value}`;
  }
  return out;
}

function flushHead(res: ServerResponse): void {
  if (!res.headersSent && !res.destroyed) res.flushHeaders();
}

// RFC 9112 §4: reason-phrase = *( HTAB / SP / VCHAR / obs-text ).
function isReasonPhrase(text: string): boolean {
  return /^[\t -~\u0080-\u00ff]*$/.test(text);
}

function errorDetail(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
