// The agent's half of one HTTP exchange (docs/http-over-streams.md): the request arrives on a tunnel
// stream, goes to the target through a keep-alive pool, and the response goes back as records. Both
// bodies stream with backpressure at each hop. The agent's policy is checked before anything is
// dialed, and again on every address DNS returns, so a name cannot smuggle the agent to a metadata
// service.
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { Agent, type ClientRequest, type IncomingMessage, request } from 'node:http';
import type { LookupFunction, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { isForbiddenAddress, type TargetPolicy } from '../agent/policy.js';
import { ErrorCode } from '../protocol/constants.js';
import {
  EnvelopeDecoder,
  encodeBodyHeader,
  encodeHead,
  encodeTrailers,
  MAX_BODY_PAYLOAD,
} from './envelope.js';
import { type HttpStreamMeta, parseStreamMeta } from './meta.js';

export interface DeliverContext {
  policy: TargetPolicy;
  pool: Agent;
  /** Connecting to the target must finish within this, or the stream fails with TARGET_TIMEOUT. */
  connectTimeoutMs: number;
  logger: Logger;
}

type TunnelStream = Duplex & {
  readonly meta: Record<string, unknown>;
  reset(code: number, reason: string): void;
};

/** The pool every exchange of one agent shares: keep-alive, TCP_NODELAY, TCP keepalive probes. */
export function createTargetPool(): Agent {
  return new Agent({
    keepAlive: true,
    keepAliveMsecs: 15_000,
    noDelay: true,
    // The most recently used socket is the least likely to have been closed by the target's idle timer.
    scheduling: 'lifo',
    maxFreeSockets: 256,
  });
}

/** Serves one stream the controller opened. Never throws; failures reset the stream with a code. */
export function deliverStream(stream: TunnelStream, ctx: DeliverContext): void {
  const parsed = parseStreamMeta(stream.meta);
  if (!parsed.ok) {
    ctx.logger.warn({ reason: parsed.reason }, 'stream refused: bad metadata');
    stream.reset(ErrorCode.PROTOCOL_ERROR, parsed.reason.slice(0, 200));
    return;
  }
  const meta = parsed.meta;
  const log = ctx.logger.child({ requestId: meta.requestId });
  if (meta.kind !== 'http') {
    stream.reset(ErrorCode.PROTOCOL_ERROR, `stream kind ${meta.kind} is not served by this agent`);
    return;
  }
  const verdict = ctx.policy.check(meta.target);
  if (!verdict.ok) {
    // The reason names the agent's patterns: it goes to the agent's log, the controller sees the code.
    log.warn({ target: meta.target, reason: verdict.reason }, 'target refused by policy');
    stream.reset(ErrorCode.TARGET_DENIED, 'target not allowed by the agent policy');
    return;
  }
  new Delivery(stream, meta, ctx, log, verdict.host, verdict.port, verdict.exempt).start();
}

const CONNECT_TIMEOUT = 'SLUICE_TARGET_CONNECT_TIMEOUT';
const FORBIDDEN_ADDRESS = 'SLUICE_TARGET_FORBIDDEN_ADDRESS';

class Delivery {
  #req: ClientRequest | null = null;
  #res: IncomingMessage | null = null;
  #responded = false;
  /** Body bytes have been taken from the stream: the request can no longer be replayed. */
  #bodyStarted = false;
  #retried = false;
  #done = false;
  readonly #decoder: EnvelopeDecoder;
  readonly #started = performance.now();

  constructor(
    private readonly stream: TunnelStream,
    private readonly meta: HttpStreamMeta,
    private readonly ctx: DeliverContext,
    private readonly log: Logger,
    private readonly host: string,
    private readonly port: number,
    private readonly exempt: boolean,
  ) {
    this.#decoder = new EnvelopeDecoder('request', {
      onBody: (piece) => this.#onBody(piece),
      onTrailers: (raw) => this.#req?.addTrailers(pairs(raw)),
    });
  }

  start(): void {
    this.#send();
    this.stream.on('data', this.#onStreamData);
    this.stream.on('end', this.#onStreamEnd);
    this.stream.on('error', this.#onStreamError);
    this.stream.on('drain', this.#onStreamDrain);
    this.stream.on('close', this.#onStreamClose);
  }

  #send(): void {
    const { head } = this.meta;
    const headers = head.chunked === true ? [...head.headers, 'Transfer-Encoding', 'chunked'] : head.headers;
    const req = request({
      host: this.host,
      port: this.port,
      method: head.method,
      path: head.path,
      headers,
      setHost: false,
      agent: this.ctx.pool,
      lookup: this.exempt ? undefined : guardedLookup,
    });
    this.#req = req;
    req.on('socket', this.#onSocket);
    req.on('information', this.#onInformation);
    req.on('response', this.#onResponse);
    req.on('error', this.#onRequestError);
    req.on('drain', this.#onRequestDrain);
    // Expect: 100-continue means the target must see the head before any body exists.
    if (head.headers.some((v, i) => i % 2 === 0 && v.toLowerCase() === 'expect')) req.flushHeaders();
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
    this.#finish('reset');
  };

  readonly #onStreamClose = (): void => {
    if (!this.#done) this.#finish('closed');
  };

  // --- response direction: target → stream ---

  readonly #onSocket = (socket: Socket): void => {
    if (!socket.connecting) return;
    const timer = setTimeout(() => {
      const err = Object.assign(new Error(`connect timed out after ${this.ctx.connectTimeoutMs} ms`), {
        code: CONNECT_TIMEOUT,
      });
      socket.destroy(err);
    }, this.ctx.connectTimeoutMs);
    socket.once('connect', () => clearTimeout(timer));
    socket.once('close', () => clearTimeout(timer));
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

  readonly #onResponse = (res: IncomingMessage): void => {
    this.#res = res;
    this.#responded = true;
    const status = res.statusCode ?? 502;
    this.stream.write(encodeHead({ status, statusText: res.statusMessage ?? '', headers: res.rawHeaders }));
    res.on('data', this.#onResponseData);
    res.on('end', this.#onResponseEnd);
    res.on('close', this.#onResponseClose);
    this.log.debug({ status, target: this.meta.target }, 'target answered');
  };

  readonly #onResponseData = (chunk: Buffer): void => {
    let ok = true;
    this.stream.cork();
    for (let off = 0; off < chunk.length; off += MAX_BODY_PAYLOAD) {
      const piece = chunk.subarray(off, off + MAX_BODY_PAYLOAD);
      this.stream.write(encodeBodyHeader(piece.length));
      ok = this.stream.write(piece);
    }
    this.stream.uncork();
    if (!ok) this.#res!.pause();
  };

  readonly #onStreamDrain = (): void => {
    this.#res?.resume();
  };

  readonly #onResponseEnd = (): void => {
    const res = this.#res!;
    if (res.rawTrailers.length > 0) this.stream.write(encodeTrailers(res.rawTrailers));
    this.stream.end();
  };

  readonly #onResponseClose = (): void => {
    // The target's connection ended before its body did: the controller must cut its client too.
    if (!this.#res!.complete) this.#abort(ErrorCode.CANCEL, 'target closed the connection mid-response');
  };

  readonly #onRequestError = (err: NodeJS.ErrnoException): void => {
    if (this.#responded || this.#done) return;
    const req = this.#req!;
    // A kept-alive socket the target closed just as we reused it: the request never reached the
    // application, so it is sent once more on a fresh connection (Node's documented pattern).
    if (req.reusedSocket && err.code === 'ECONNRESET' && !this.#bodyStarted && !this.#retried) {
      this.#retried = true;
      this.#detachRequest(req);
      this.#send();
      if (this.stream.readableEnded) this.#req?.end();
      return;
    }
    const [code, reason] = classify(err, this.meta.target);
    this.log.warn({ target: this.meta.target, err: err.message, code: err.code }, 'target request failed');
    this.#abort(code, reason);
  };

  #detachRequest(req: ClientRequest): void {
    req.off('information', this.#onInformation);
    req.off('response', this.#onResponse);
    req.off('error', this.#onRequestError);
    req.off('drain', this.#onRequestDrain);
    req.on('error', ignore);
    req.destroy();
  }

  #abort(code: number, reason: string): void {
    if (!this.stream.destroyed) this.stream.reset(code, reason);
    this.#finish('aborted');
  }

  #finish(how: string): void {
    if (this.#done) return;
    this.#done = true;
    const req = this.#req;
    if (req !== null && !(this.#res?.complete ?? false)) this.#detachRequest(req);
    this.#res?.off('close', this.#onResponseClose);
    if (how !== 'closed') this.stream.destroy();
    this.log.debug({ how, ms: Math.round(performance.now() - this.#started) }, 'stream finished');
  }
}

function ignore(): void {}

function pairs(raw: string[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) out.push([raw[i]!, raw[i + 1]!]);
  return out;
}

const UNREACHABLE = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_FAIL',
]);

/** The RST code and the reason for a request that failed before the target answered. */
function classify(err: NodeJS.ErrnoException, target: string): [number, string] {
  if (err.code === FORBIDDEN_ADDRESS) return [ErrorCode.TARGET_DENIED, err.message];
  if (err.code === CONNECT_TIMEOUT) return [ErrorCode.TARGET_TIMEOUT, `${target}: ${err.message}`];
  if (err.code !== undefined && UNREACHABLE.has(err.code))
    return [ErrorCode.TARGET_UNREACHABLE, `${target}: ${err.code}`];
  return [ErrorCode.TARGET_UNREACHABLE, `${target}: closed before answering (${err.code ?? err.message})`];
}

// Checks every address a target name resolves to. Node 20 asks for all addresses (happy eyeballs) or
// one, depending on the socket's options; both forms are handled and only allowed addresses are kept.
const guardedLookup: LookupFunction = (hostname, options, callback) => {
  dnsLookup(hostname, options, (err, address: string | LookupAddress[], family?: number) => {
    if (err !== null) return callback(err, '', 0);
    if (Array.isArray(address)) {
      const allowed = address.filter((a) => !isForbiddenAddress(a.address));
      if (allowed.length === 0) return callback(forbidden(hostname, address[0]?.address ?? ''), '', 0);
      return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, allowed);
    }
    if (isForbiddenAddress(address)) return callback(forbidden(hostname, address), '', 0);
    callback(null, address, family ?? 0);
  });
};

function forbidden(hostname: string, address: string): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(
    `${hostname} resolves to the protected address ${address}; allow it explicitly with --allow`,
  );
  err.code = FORBIDDEN_ADDRESS;
  return err;
}
