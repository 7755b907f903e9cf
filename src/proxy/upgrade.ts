// The controller's half of an upgraded connection (docs/http-over-streams.md, "Upgrades"): the client's
// bytes after its request head go into the stream raw, from the first byte; the target's answer comes
// back as one HEAD. After a 101 both directions are raw bytes, so WebSocket frames, compression and any
// other protocol pass through untouched. FIN maps to FIN and a reset to a reset, each way. The client's
// side is an UpgradeClient: an HTTP/1.1 connection's socket here, or an RFC 8441 HTTP/2 stream
// (websocket-h2.ts), which differ only in how the answer is written and how a connection is cut.
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { type ReasonCode, streamErrorCode } from '../errors.js';
import { ErrorCode } from '../protocol/constants.js';
import { readInto, writeToward } from '../tunnel/stream.js';
import { EnvelopeDecoder, type ResponseHead } from './envelope.js';
import { type ExchangeStats, failureBeforeAnswer, type Outcome } from './forward.js';
import { forwardResponseHeaders } from './headers.js';

export interface UpgradeOptions {
  requestId: string;
  via: string;
  /** Time until the target's answer; then 504. 0 turns it off. */
  responseTimeoutMs: number;
  /** After the switch, no byte either way for this long closes the connection; 0 never does. */
  idleTimeoutMs: number;
  /** Called once the target switched protocols (its 101 is being written to the client). */
  onSwitch?: () => void;
}

type TunnelStream = Duplex & { reset(code: number, reason: string): void };

/** What the client was sent for the target's answer, or why the answer cannot be relayed at all. */
export type UpgradeAnswer =
  { status: number; refused?: undefined } | { refused: string; detail: string; status?: undefined };

/**
 * The client's end of an upgrade, as the relay drives it: its bytes both ways (`channel`: FIN for
 * FIN, 'close' when it is gone), and the few things that depend on what kind of connection it is.
 */
export interface UpgradeClient {
  readonly channel: Duplex;
  /** Fits the channel for a long-lived, interactive relay: no idle cut of its own. */
  prepare(): void;
  /** After a switch: no byte either way for `ms` calls `onIdle`. */
  idleAfter(ms: number, onIdle: () => void): void;
  /**
   * Writes the head for the target's answer (`headers` already this hop's, Upgrade kept for a 101);
   * a refusal writes nothing, and the exchange fails with a 502.
   */
  answer(head: ResponseHead, headers: string[], switched: boolean): UpgradeAnswer;
  /** Ends the connection so that the client sees a failure, not an orderly end. */
  cut(): void;
}

/** TCP keepalive probes on upgraded client sockets: an idle WebSocket is kept, a dead peer found. */
export const UPGRADE_KEEPALIVE_MS = 30_000;

/**
 * When a drain's grace period (the controller's, or the agent's upgrade grace) ends, how long upgraded
 * connections get to finish the close it starts (a FIN each way) before what is left is cut. The same
 * on both sides, so that neither cuts what the other is still closing in order.
 */
export const UPGRADE_CLOSE_MS = 1000;

/** How long a finished upgraded connection waits for the client to close its side. */
const LINGER_MS = 5_000;

/** An HTTP/1.1 response head as bytes, for sockets that left Node's HTTP machinery. */
export function serializeHead(
  status: number,
  statusText: string | undefined,
  headers: readonly string[],
): Buffer {
  const reason =
    statusText !== undefined && /^[\t -~]*$/.test(statusText) ? statusText : (STATUS_CODES[status] ?? '');
  let head = `HTTP/1.1 ${status} ${reason}\r\n`;
  for (let i = 0; i + 1 < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
  return Buffer.from(`${head}\r\n`, 'latin1');
}

/**
 * Runs one upgrade over `stream`. Resolves when the exchange is over; `failed` means nothing was
 * written to the client yet, so the caller answers with an error page.
 */
export function forwardUpgrade(
  socket: Socket,
  head: Buffer,
  stream: TunnelStream,
  options: UpgradeOptions,
  stats: ExchangeStats,
): Promise<Outcome> {
  return relayUpgrade(new SocketClient(socket), head, stream, options, stats);
}

/** Runs one upgrade for any kind of client end; see forwardUpgrade. */
export function relayUpgrade(
  client: UpgradeClient,
  head: Buffer,
  stream: TunnelStream,
  options: UpgradeOptions,
  stats: ExchangeStats,
): Promise<Outcome> {
  return new Promise((resolve) => new UpgradeExchange(client, head, stream, options, stats, resolve).start());
}

/** An HTTP/1.1 connection that left Node's HTTP parser: the answer is an HTTP/1.1 head on it. */
class SocketClient implements UpgradeClient {
  constructor(readonly channel: Socket) {}

  prepare(): void {
    // Long-lived and interactive: no idle cut by Sluice, small writes go out at once, and the kernel
    // probes a silent peer.
    this.channel.setTimeout(0);
    this.channel.setNoDelay(true);
    this.channel.setKeepAlive(true, UPGRADE_KEEPALIVE_MS);
  }

  idleAfter(ms: number, onIdle: () => void): void {
    this.channel.setTimeout(ms, onIdle);
  }

  answer(head: ResponseHead, headers: string[], switched: boolean): UpgradeAnswer {
    // A refused upgrade is relayed as a plain response whose end is the connection's end: the client's
    // socket left Node's HTTP parser, so there is no keep-alive to return to.
    if (!switched) headers.push('Connection', 'close');
    // Without chunked framing (hop-by-hop, removed above) the body runs to the close, or to its stated
    // Content-Length.
    this.channel.write(serializeHead(head.status, head.statusText, headers));
    return { status: head.status };
  }

  cut(): void {
    resetSocket(this.channel);
  }
}

class UpgradeExchange {
  #answered = false;
  #settled = false;
  #timer: NodeJS.Timeout | null = null;
  readonly #decoder: EnvelopeDecoder;

  readonly #socket: Duplex;

  constructor(
    private readonly client: UpgradeClient,
    private readonly head: Buffer,
    private readonly stream: TunnelStream,
    private readonly options: UpgradeOptions,
    private readonly stats: ExchangeStats,
    private readonly resolve: (outcome: Outcome) => void,
  ) {
    this.#socket = client.channel;
    this.#decoder = new EnvelopeDecoder('response', {
      onHead: (h) => this.#onHead(h),
      onBody: (piece) => this.#toClient(piece),
      onTrailers: () => {},
      onRaw: (piece) => this.#toClient(piece),
    });
  }

  start(): void {
    const { stream } = this;
    const socket = this.#socket;
    this.client.prepare();
    if (this.head.length > 0) this.#toTarget(this.head);
    socket.on('data', this.#onClientData);
    socket.on('end', this.#onClientEnd);
    socket.on('close', this.#onClientClose);
    socket.on('error', ignore);
    socket.on('drain', this.#onClientDrain);
    stream.on('data', this.#onStreamData);
    stream.on('end', this.#onStreamEnd);
    stream.on('error', this.#onStreamError);
    stream.on('close', this.#onStreamClose);
    stream.on('drain', this.#onStreamDrain);
    if (this.options.responseTimeoutMs > 0)
      this.#timer = setTimeout(this.#onTimeout, this.options.responseTimeoutMs);
  }

  // --- client → target: raw from the first byte ---

  readonly #onClientData = (chunk: Buffer): void => this.#toTarget(chunk);

  #toTarget(chunk: Buffer): void {
    this.stats.bytesIn += chunk.length;
    if (!writeToward(this.stream, chunk)) this.#socket.pause();
  }

  readonly #onStreamDrain = (): void => {
    this.#socket.resume();
  };

  readonly #onClientEnd = (): void => {
    // Half-close: the client is done sending; the target may still answer.
    if (!this.stream.destroyed) this.stream.end();
  };

  readonly #onClientClose = (): void => {
    if (this.#settled) return;
    // Closed without both FINs exchanged (or before the answer): a reset, so the target lets go at once.
    const clean = this.#socket.readableEnded && this.#socket.writableEnded;
    if (!clean && !this.stream.destroyed) this.stream.reset(ErrorCode.CANCEL, 'client closed the connection');
    this.#settle(this.#answered ? { kind: 'done' } : { kind: 'client-aborted' });
  };

  // --- target → client ---

  readonly #onStreamData = (chunk: Buffer): void => {
    try {
      this.#decoder.push(chunk);
      // Switched: the rest is raw bytes for the client, which the stream hands over directly. Not
      // inside onHead: the rest of this chunk must reach the client before what the stream holds.
      if (this.#answered && this.#decoder.raw) {
        this.stream.off('data', this.#onStreamData);
        readInto(this.stream, this.#rawToClient);
      }
    } catch (err) {
      this.stream.reset(ErrorCode.PROTOCOL_ERROR, 'bad record');
      if (this.#answered) this.#cut(`agent broke the record format: ${(err as Error).message}`);
      else this.#fail(502, 'bad_response', 'the agent sent a malformed response', (err as Error).message);
    }
  };

  #onHead(head: ResponseHead): void {
    if (head.status < 200 && head.status !== 101) return; // interim answers mean nothing on a raw socket
    this.#clearTimer();
    const switched = head.status === 101;
    const headers = forwardResponseHeaders(head.headers, {
      via: this.options.via,
      requestId: this.options.requestId,
      httpVersion: '1.1',
      upgrade: switched,
    });
    const answer = this.client.answer(head, headers, switched);
    if (answer.refused !== undefined) {
      this.stream.reset(ErrorCode.PROTOCOL_ERROR, 'answer not relayable');
      this.#fail(502, 'bad_response', answer.refused, answer.detail);
      return;
    }
    this.#answered = true;
    if (switched && this.options.idleTimeoutMs > 0) {
      this.client.idleAfter(this.options.idleTimeoutMs, this.#onIdle);
    }
    this.stats.status = answer.status;
    if (switched) this.options.onSwitch?.();
  }

  #toClient(piece: Buffer): void {
    if (this.#settled && !this.#answered) {
      this.stats.bytesOut += piece.length; // refused: the error page is the client's answer
      return;
    }
    if (!this.#rawToClient(piece)) this.stream.pause();
  }

  readonly #rawToClient = (piece: Buffer): boolean => {
    this.stats.bytesOut += piece.length;
    return this.#socket.write(piece);
  };

  readonly #onClientDrain = (): void => {
    this.stream.resume();
  };

  readonly #onStreamEnd = (): void => {
    try {
      this.#decoder.finish();
    } catch (err) {
      const reason = 'the agent closed the stream before the target answered';
      this.#fail(502, 'stream_broken', reason, (err as Error).message);
      return;
    }
    this.#socket.end();
  };

  readonly #onStreamError = (err: Error): void => {
    this.stats.code = streamErrorCode(err) ?? this.stats.code;
    if (this.#answered) {
      this.#cut(`stream failed: ${err.message}`);
      return;
    }
    const failure = failureBeforeAnswer(err);
    this.#fail(failure.status, failure.code, failure.reason, err.message);
  };

  readonly #onStreamClose = (): void => {
    if (this.#settled) return;
    if (!this.#answered) {
      this.#fail(
        502,
        'stream_broken',
        'the tunnel stream closed before the target answered',
        'stream closed',
      );
      return;
    }
    // Both directions finished: the socket ends once its last bytes are written. A client that never
    // closes its side after that is not waited for forever.
    if (!this.#socket.writableEnded) this.#socket.end();
    const linger = setTimeout(() => this.#socket.destroy(), LINGER_MS).unref();
    this.#socket.once('close', () => clearTimeout(linger));
    this.#settle({ kind: 'done' });
  };

  readonly #onIdle = (): void => {
    this.stream.reset(ErrorCode.CANCEL, 'idle timeout');
    this.#cut(`no traffic for ${this.options.idleTimeoutMs / 1000}s`);
  };

  readonly #onTimeout = (): void => {
    this.#timer = null;
    if (this.#answered || this.#settled) return;
    this.stream.reset(ErrorCode.CANCEL, 'response timeout');
    this.#fail(
      504,
      'timeout',
      `the target did not answer within ${this.options.responseTimeoutMs / 1000}s`,
      'response timeout',
    );
  };

  #fail(status: 502 | 503 | 504, code: ReasonCode, reason: string, detail: string): void {
    this.#settle({ kind: 'failed', status, code, reason, retryable: false, detail });
  }

  #cut(detail: string): void {
    // A reset, not a FIN: a plain close would tell the client the target finished sending.
    this.client.cut();
    this.#settle({ kind: 'broken', detail });
  }

  #settle(outcome: Outcome): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#clearTimer();
    if (outcome.kind === 'failed' || outcome.kind === 'client-aborted') {
      this.#socket.off('data', this.#onClientData);
      this.stream.off('data', this.#onStreamData);
      this.stream.on('error', ignore);
      if (!this.stream.destroyed) this.stream.destroy();
    }
    this.resolve(outcome);
  }

  #clearTimer(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }
}

/**
 * Closes with an RST where the socket is plain TCP; a TLS socket (not resettable by Node) just closes.
 * Once our FIN is queued a plain close follows it instead: resetAndDestroy() behind a pending end()
 * leaves Node spinning in its exit cleanup.
 */
export function resetSocket(socket: Socket): void {
  if (socket.writableEnded) {
    socket.destroy();
    return;
  }
  try {
    socket.resetAndDestroy();
  } catch {
    socket.destroy();
  }
}

function ignore(): void {}
