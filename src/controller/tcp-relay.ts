// The controller's half of a TCP route's connection (docs/tcp.md): a `tcp` stream opened through the
// ClusterDispatcher (so a fleet's peers carry it as they carry HTTP), then the client's socket and the
// stream spliced together. Until the target's first byte comes back, the client's bytes are also held
// (up to HOLD_LIMIT): an agent that refuses the stream unprocessed (REFUSED_STREAM from a draining
// agent, OVERLOAD) has read none of them, and the next tunnel gets them all again. Past HOLD_LIMIT the
// relay commits to the stream it has: it stops holding and lets the client's bytes flow on, since many
// targets answer only once they have read a whole request (a large Redis SET, an upload); a refusal
// after that resets the client. FIN maps to FIN and RST to RST, each way on its own; a client's FIN is
// checked to be one before it is passed on (confirmFin).
import type { Socket } from 'node:net';
import { ErrorCode } from '../protocol/constants.js';
import { SluiceError } from '../errors.js';
import type { Stream, StreamMeta } from '../tunnel/stream.js';
import type { TcpStreamMeta } from '../proxy/meta.js';
import { confirmFin, oneWay, resetRelayed } from '../proxy/splice.js';
import type { ClusterDispatcher, DispatchHandler, Opened, Unavailable } from './dispatcher.js';

/** Client bytes held for a retry while the target has sent nothing; past it the relay commits. */
export const HOLD_LIMIT = 64 * 1024;

/** How a relayed connection ended, for its log line and metrics. */
export type TcpOutcome =
  | 'done'
  | 'reset'
  | 'refused'
  | 'no_tunnel'
  | 'target_unreachable'
  | 'target_timeout'
  | 'target_denied'
  | 'cut';

export interface RelayStats {
  /** Client to target. */
  bytesIn: number;
  /** Target to client. */
  bytesOut: number;
  /** The tunnel's agent (`agent/replica`) or peer that carried it, once one did. */
  via: string | undefined;
  detail: string | undefined;
}

interface Attempt {
  outcome: TcpOutcome;
  /** The agent refused the stream before acting on it: the next tunnel may take it. */
  retryable: boolean;
}

/**
 * Relays `socket` to `meta.target` through a stream to `cluster`; resolves once both sides are
 * closed. `cut` ends the relay early (the drain's grace is over): the client and stream are reset.
 */
export class TcpRelay {
  readonly stats: RelayStats = { bytesIn: 0, bytesOut: 0, via: undefined, detail: undefined };
  readonly #socket: Socket;
  /** Client bytes sent since the stream opened, while the target has answered nothing. */
  #held: Buffer[] = [];
  #heldBytes = 0;
  #clientEnded = false;
  #clientGone = false;
  #answered = false;
  /** Past HOLD_LIMIT: the client's bytes flow to the stream as they come, and no retry is possible. */
  #committed = false;
  #stream: Stream | undefined;
  #cut = false;

  constructor(socket: Socket) {
    this.#socket = socket;
    // Bytes that arrive before a stream is open wait here, as do those of a refused attempt.
    socket.pause();
    socket.on('data', this.#onClientData);
    socket.on('end', this.#onClientEnd);
    socket.on('error', () => {});
    socket.on('close', this.#onClientClose);
  }

  run(dispatcher: ClusterDispatcher, cluster: string, meta: TcpStreamMeta): Promise<TcpOutcome> {
    socketResume(this.#socket, this.#heldBytes);
    return dispatcher
      .dispatch(cluster, meta as unknown as StreamMeta, this.#handler(), (listener) => {
        if (this.#clientGone) {
          listener();
          return () => {};
        }
        this.#socket.once('close', listener);
        return () => this.#socket.off('close', listener);
      })
      .then(({ outcome }) => {
        if (outcome !== 'done' && !this.#socket.destroyed) resetRelayed(this.#socket);
        return outcome;
      });
  }

  /** Ends the relay now with an RST both ways; run() resolves `cut`. */
  cut(): void {
    this.#cut = true;
    if (this.#stream !== undefined && !this.#stream.destroyed) this.#stream.reset(ErrorCode.CANCEL, 'cut');
    if (!this.#socket.destroyed) resetRelayed(this.#socket);
  }

  /** Ends the relay with an orderly close towards the client: its write side gets a FIN. */
  close(): void {
    if (!this.#socket.destroyed && !this.#socket.writableEnded) this.#socket.end();
    if (this.#stream !== undefined && !this.#stream.destroyed && !this.#stream.writableEnded)
      this.#stream.end();
  }

  #handler(): DispatchHandler<Attempt> {
    return {
      run: (opened) => this.#attempt(opened),
      refusedUnprocessed: (a) => a.retryable && !this.#committed && !this.#clientGone && !this.#cut,
      unavailable: (why: Unavailable): Attempt => {
        this.stats.detail = why.detail;
        return { outcome: 'no_tunnel', retryable: false };
      },
    };
  }

  readonly #onClientData = (chunk: Buffer): void => {
    this.stats.bytesIn += chunk.length;
    if (this.#answered || this.#committed) return; // #join() or #commit() writes it.
    this.#held.push(chunk);
    this.#heldBytes += chunk.length;
    const stream = this.#stream;
    if (stream !== undefined && !stream.destroyed) stream.write(chunk);
    if (this.#heldBytes <= HOLD_LIMIT) return;
    // No stream yet: wait for one with what is held. With one, stop holding and let the rest flow.
    if (stream === undefined) this.#socket.pause();
    else this.#commit(stream);
  };

  readonly #countOut = (bytes: number): void => {
    this.stats.bytesOut += bytes;
  };

  /** Stops holding the client's bytes: from now on they go to `stream` only, with its backpressure. */
  #commit(stream: Stream): void {
    if (this.#committed || this.#answered) return;
    this.#committed = true;
    this.#held = [];
    this.#heldBytes = 0;
    oneWay(this.#socket, stream, false);
  }

  /** Joins the client and `stream`: the target's way, and the client's unless #commit() joined it. */
  #join(stream: Stream): void {
    oneWay(stream, this.#socket, true, this.#countOut);
    if (!this.#committed) oneWay(this.#socket, stream, false);
  }

  // The client's FIN goes on to the stream from here alone, in every phase, once it proved to be one;
  // a reset in disguise closes the socket with an error instead, and #onClientClose resets the stream.
  readonly #onClientEnd = (): void => {
    confirmFin(this.#socket, () => {
      this.#clientEnded = true;
      const stream = this.#stream;
      if (stream !== undefined && !stream.destroyed && !stream.writableEnded) stream.end();
    });
  };

  readonly #onClientClose = (): void => {
    this.#clientGone = true;
    const stream = this.#stream;
    if (stream !== undefined && !stream.destroyed && !this.#closedCleanly()) {
      stream.reset(ErrorCode.CANCEL, 'the client reset the connection');
    }
  };

  /**
   * Whether the client's socket closed after both FINs. A client that left without its FIN (an RST,
   * or before it sent one) did not, nor did one that sent its FIN and then met our writes with an
   * RST (a killed process): the target's bytes can no longer reach it, and the stream, paused on a
   * socket that will never drain, would otherwise never close.
   */
  #closedCleanly(): boolean {
    return this.#clientEnded && this.#socket.writableFinished;
  }

  #attempt(opened: Opened): Promise<Attempt> {
    const { stream, tunnel } = opened;
    this.#stream = stream;
    this.stats.via = tunnel.peer ?? `${tunnel.agent}/${tunnel.replica}`;
    if (this.#clientGone && !this.#clientEnded) {
      stream.reset(ErrorCode.CANCEL, 'the client left');
      return Promise.resolve({ outcome: 'reset', retryable: false });
    }
    for (const chunk of this.#held) stream.write(chunk);
    if (this.#clientEnded) stream.end();
    else if (this.#heldBytes > HOLD_LIMIT) this.#commit(stream);
    return new Promise<Attempt>((resolve) => {
      let settled = false;
      const settle = (a: Attempt): void => {
        if (settled) return;
        settled = true;
        resolve(a);
      };
      const onFirst = (chunk: Buffer): void => {
        this.#answered = true;
        this.#held = [];
        this.#heldBytes = 0;
        stream.off('data', onFirst);
        stream.pause();
        this.stats.bytesOut += chunk.length;
        this.#socket.write(chunk);
        this.#join(stream);
      };
      stream.on('data', onFirst);
      stream.on('end', () => {
        // The target's FIN with nothing before it: no splice took the stream, so pass it on here.
        if (!this.#answered) {
          this.#answered = true;
          this.#held = [];
          this.#join(stream);
          if (!this.#socket.writableEnded) this.#socket.end();
        }
      });
      stream.on('error', (err: Error) => {
        const wire = err instanceof SluiceError ? err.wireCode : undefined;
        this.stats.detail = err.message;
        const refused = wire === ErrorCode.REFUSED_STREAM || wire === ErrorCode.OVERLOAD;
        if (!this.#answered && refused && !this.#committed) {
          settle({ outcome: 'refused', retryable: true });
          return;
        }
        if (!this.#socket.destroyed) resetRelayed(this.#socket);
        if (!this.#answered && refused) {
          settle({ outcome: 'refused', retryable: false });
          return;
        }
        settle({ outcome: this.#cut ? 'cut' : resetOutcome(wire, this.#answered), retryable: false });
      });
      stream.on('close', () => {
        if (settled) return;
        // Closed without an error: both FINs passed. Wait for the client's side to be flushed.
        const s = this.#socket;
        if (s.destroyed || s.writableFinished) {
          settle({ outcome: this.#cut ? 'cut' : 'done', retryable: false });
          return;
        }
        s.once('close', () => settle({ outcome: this.#cut ? 'cut' : 'done', retryable: false }));
        s.once('finish', () => settle({ outcome: this.#cut ? 'cut' : 'done', retryable: false }));
      });
      this.#socket.once('close', () => {
        if (this.#closedCleanly()) return; // The stream's close settles it.
        settle({ outcome: this.#cut ? 'cut' : 'reset', retryable: false });
      });
      stream.resume();
    });
  }
}

function socketResume(socket: Socket, held: number): void {
  if (held <= HOLD_LIMIT) socket.resume();
}

function resetOutcome(wire: number | undefined, answered: boolean): TcpOutcome {
  if (answered) return 'reset';
  switch (wire) {
    case ErrorCode.TARGET_UNREACHABLE:
      return 'target_unreachable';
    case ErrorCode.TARGET_TIMEOUT:
      return 'target_timeout';
    case ErrorCode.TARGET_DENIED:
      return 'target_denied';
    default:
      return 'reset';
  }
}
