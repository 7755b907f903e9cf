// HTTP/2 on the TLS listener (DESIGN §3): ALPN offers `h2` and `http/1.1`, and Node's compatibility API
// turns each HTTP/2 stream into a request/response pair the PublicEdge serves like an HTTP/1.1 one.
// This file holds what differs: the session limits, the request's head made to read as HTTP/1.1 does
// (pseudo-header fields out, `:authority` as Host), an RFC 8441 WebSocket's extended CONNECT made to
// read as the HTTP/1.1 upgrade it stands for, the rapid-reset guard (CVE-2023-44487) and the sessions
// a drain must close with GOAWAY.
import type { IncomingMessage } from 'node:http';
import { constants, type Http2Session, type ServerHttp2Stream, type Settings } from 'node:http2';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { LiveSet } from '../collections.js';
import { newWebSocketKey } from '../proxy/websocket-h2.js';
import type { HttpOptions } from './config.js';

/** Streams one session may have open at once (RFC 9113 §6.5.2 SETTINGS_MAX_CONCURRENT_STREAMS). */
export const H2_MAX_CONCURRENT_STREAMS = 100;

/**
 * Streams a client may reset before their response began, per session and per second, before the
 * session is ended with GOAWAY ENHANCE_YOUR_CALM. A browser cancels a few on a navigation; a rapid-reset
 * attack (CVE-2023-44487) cancels thousands, each of which would cost a tunnel stream.
 */
export const H2_MAX_EARLY_RESETS_PER_SECOND = 200;

/**
 * The SETTINGS the listener sends: bounded streams and header lists, no server push, and
 * SETTINGS_ENABLE_CONNECT_PROTOCOL, which lets clients open WebSockets as streams (RFC 8441 §3).
 */
export function http2Settings(http: HttpOptions): Settings {
  return {
    maxConcurrentStreams: H2_MAX_CONCURRENT_STREAMS,
    maxHeaderListSize: http.maxHeaderBytes,
    enablePush: false,
    enableConnectProtocol: true,
  };
}

/** The protocol an extended CONNECT asks for (RFC 8441 §4), or undefined for a plain CONNECT. */
export function connectProtocol(req: IncomingMessage): string | undefined {
  const protocol = req.headers[':protocol'];
  return typeof protocol === 'string' ? protocol : undefined;
}

/** Whether the request came on an HTTP/2 stream (else HTTP/1.x, whose socket is the connection's). */
export function isHttp2(req: IncomingMessage): boolean {
  return req.httpVersionMajor === 2;
}

/** What closes when the client goes: the request's HTTP/2 stream, or its HTTP/1.x connection. */
export function clientChannel(req: IncomingMessage): Duplex {
  return isHttp2(req) ? (req as unknown as { stream: ServerHttp2Stream }).stream : req.socket;
}

/**
 * Makes an HTTP/2 request's head read as HTTP/1.1's, for the edge that routes and forwards it: the
 * pseudo-header fields leave `rawHeaders`, `:authority` becomes the Host field when the client sent
 * none (RFC 9113 §8.3.1), the cookie fields a client may split are joined again (§8.2.3), and a body
 * with no Content-Length is marked chunked, the framing it needs towards an HTTP/1.1 target.
 */
export function asHttp1Head(req: IncomingMessage): void {
  const raw = http1Fields(req);
  const stream = (req as unknown as { stream: ServerHttp2Stream }).stream;
  if (!stream.endAfterHeaders && req.headers['content-length'] === undefined) {
    raw.push('transfer-encoding', 'chunked');
    req.headers['transfer-encoding'] = 'chunked';
  }
  Object.defineProperty(req, 'rawHeaders', { value: raw, configurable: true });
}

/**
 * Makes an RFC 8441 WebSocket (`:method CONNECT`, `:protocol websocket`) read as the HTTP/1.1
 * upgrade of RFC 6455 §4.1 that the agent sends the target: its fields as asHttp1Head has them, then
 * `Upgrade: websocket` and a Sec-WebSocket-Key, which the extended CONNECT has none of (RFC 8441 §5);
 * Sec-WebSocket-Version, -Protocol and -Extensions are the client's. Its stream never ends after the
 * head, yet it carries no body: none is marked. Returns the key, whose accept value the target's 101
 * must carry.
 */
export function asWebSocketUpgrade(req: IncomingMessage): string {
  const raw = http1Fields(req, UPGRADE_FIELDS);
  const key = newWebSocketKey();
  raw.push('upgrade', 'websocket', 'sec-websocket-key', key);
  req.headers.upgrade = 'websocket';
  Object.defineProperty(req, 'rawHeaders', { value: raw, configurable: true });
  return key;
}

// What a WebSocket's extended CONNECT must not bring along: this hop sets both (Upgrade is not even
// valid HTTP/2, and Node refuses it before this point).
const UPGRADE_FIELDS: ReadonlySet<string> = new Set(['upgrade', 'sec-websocket-key']);

/** An HTTP/2 request's fields as HTTP/1.1 has them (see asHttp1Head), without those in `skip`. */
function http1Fields(req: IncomingMessage, skip?: ReadonlySet<string>): string[] {
  const raw: string[] = [];
  const cookies: string[] = [];
  let host: string | undefined;
  let authority: string | undefined;
  const given = req.rawHeaders;
  for (let i = 0; i + 1 < given.length; i += 2) {
    const name = given[i]!;
    const value = given[i + 1]!;
    if (name === ':authority') authority = value;
    if (name.startsWith(':') || skip?.has(name) === true) continue;
    if (name === 'cookie') {
      cookies.push(value);
      continue;
    }
    if (name === 'host') host = value;
    raw.push(name, value);
  }
  if (host === undefined && authority !== undefined) {
    raw.unshift('host', authority);
    req.headers.host = authority;
  }
  if (cookies.length > 0) raw.push('cookie', cookies.join('; '));
  return raw;
}

/**
 * The HTTP/2 sessions of one listener: each is watched for rapid resets, and a drain closes them all
 * (GOAWAY, then open streams finish).
 */
export class Http2Sessions {
  readonly #sessions = new LiveSet<Http2Session>('http2.sessions');
  readonly #log: Logger | undefined;
  readonly #idleMs: number;
  #draining = false;

  /** `idleMs`: a session with no open stream and no frame for this long is closed (keep-alive). */
  constructor(log: Logger | undefined, idleMs: number) {
    this.#log = log;
    this.#idleMs = idleMs;
  }

  readonly onSession = (session: Http2Session): void => {
    if (this.#draining) {
      session.close();
      return;
    }
    this.#sessions.add(session);
    session.once('close', () => this.#sessions.delete(session));
    // A session's failure (a protocol error, a reset connection) is the client's affair.
    session.on('error', ignore);
    const guard = new ResetGuard(session, this.#log);
    session.on('stream', guard.onStream);
    if (this.#idleMs > 0) closeWhenIdle(session, this.#idleMs);
  };

  startDrain(): void {
    this.#draining = true;
    for (const session of this.#sessions.list()) session.close();
  }
}

/**
 * An idle HTTP/2 connection holds a socket as an idle HTTP/1.1 one does, and is closed after the same
 * http.keepAliveTimeout: once no frame came for that long while no stream was open. A stream that is
 * merely quiet (an event stream between events) keeps its session.
 */
function closeWhenIdle(session: Http2Session, idleMs: number): void {
  let open = 0;
  session.on('stream', (stream: ServerHttp2Stream) => {
    open++;
    stream.once('close', () => {
      // The timer fires once: one that fired while streams were open is armed again now.
      if (--open === 0 && !session.closed) session.setTimeout(idleMs);
    });
  });
  session.on('timeout', () => {
    if (open === 0) session.close();
  });
  session.setTimeout(idleMs);
}

/** Counts one session's streams the client reset before their response began; ends it past the limit. */
class ResetGuard {
  #windowStart = 0;
  #resets = 0;
  readonly #session: Http2Session;
  readonly #log: Logger | undefined;

  constructor(session: Http2Session, log: Logger | undefined) {
    this.#session = session;
    this.#log = log;
  }

  readonly onStream = (stream: ServerHttp2Stream): void => {
    stream.once('aborted', () => {
      if (!stream.headersSent) this.#count();
    });
  };

  #count(): void {
    const now = performance.now();
    if (now - this.#windowStart >= 1000) {
      this.#windowStart = now;
      this.#resets = 0;
    }
    if (++this.#resets <= H2_MAX_EARLY_RESETS_PER_SECOND || this.#session.destroyed) return;
    const client = this.#session.socket?.remoteAddress;
    this.#log?.warn(
      { event: 'h2-rapid-reset', client, resets: this.#resets },
      'HTTP/2 client reset streams too fast; session closed',
    );
    // The final GOAWAY says why (Node sends NO_ERROR for a destroy without an error).
    this.#session.destroy(new Error('rapid reset'), constants.NGHTTP2_ENHANCE_YOUR_CALM);
  }
}

function ignore(): void {}
