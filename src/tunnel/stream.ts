// One stream of a session: an ordered byte stream in each direction with credit flow control
// (docs/protocol.md §5–6), exposed as a Node Duplex. The session owns the wire; a stream only asks it
// to send frames, and the session calls the `on*` methods below as frames arrive.
import { Duplex } from 'node:stream';
import { SluiceError, StreamResetError } from '../errors.js';
import { ErrorCode } from '../protocol/constants.js';

/** Stream-open metadata carried by SYN (docs/protocol.md §5). The tunnel treats it as opaque. */
export type StreamMeta = Record<string, unknown>;

/** What a stream needs from its session. Implemented by Session; kept narrow so streams stay testable. */
export interface StreamOwner {
  readonly maxFrameData: number;
  /** False while the transport is congested: the stream must wait for `resumeWriter`. */
  readonly canWrite: boolean;
  sendData(stream: Stream, chunk: Buffer, fin: boolean): void;
  queueWriter(stream: Stream): void;
  returnCredit(stream: Stream, bytes: number): void;
  /** A retired stream's reader took `bytes` that still counted against the session bound. */
  releaseUnread(bytes: number): void;
  resetStream(stream: Stream, code: number, reason: string): void;
  finished(stream: Stream): void;
}

const READ_HIGH_WATER = 64 * 1024;

/** Queued pieces smaller than this are packed into the stream's own slab rather than copied alone. */
const SMALL_PIECE = 4 * 1024;
/** Slabs start small, so an idle stream that once held one tiny piece keeps little, and double up to 16 KiB. */
const MIN_SLAB = 512;
const MAX_SLAB = 16 * 1024;
const WRITE_HIGH_WATER = 256 * 1024;
const EMPTY = Buffer.alloc(0);

export class Stream extends Duplex {
  readonly id: number;
  readonly meta: StreamMeta;
  /** True once the peer has ACKed our SYN, or at once for a stream the peer opened. */
  accepted: boolean;

  // --- owned by the session (internal) ---
  /** Bytes we may still send: the peer's credit to us. */
  sendCredit: number;
  /** Bytes the peer may still send us before it needs WINDOW_UPDATE. */
  recvWindow: number;
  /** True once the session no longer routes frames to this stream (both FINs, or reset). */
  detached = false;
  /** True while the stream waits in the session's writer queue for the transport to drain. */
  writerQueued = false;
  /** A stream the peer opened, taken but not ACKed yet: the ACK goes out with its first frame. */
  ackPending = false;

  readonly #owner: StreamOwner;
  readonly #windowSize: number;
  readonly #creditThreshold: number;

  // Receive side: bytes that arrived while the reader did not want them. Bounded by the window.
  #queue: Buffer[] = [];
  #queuedBytes = 0;
  /** Queued bytes that still count against the session bound after the stream left the table. */
  #countedUnread = 0;
  #slab: Buffer | null = null;
  #slabUsed = 0;
  #wantRead = false;
  /** Bytes handed to the reader whose credit has not been returned yet. */
  #consumed = 0;
  #remoteFin = false;
  #endPushed = false;

  // Send side: the write in progress, cut into frames as credit and the transport allow.
  #sendBuf: Buffer = EMPTY;
  #sendList: Buffer[] | null = null;
  #sendIndex = 0;
  #sendOffset = 0;
  #sendCb: ((err?: Error | null) => void) | null = null;
  #localFin = false;

  #resetCode: number = ErrorCode.CANCEL;
  #resetReason = '';

  constructor(
    owner: StreamOwner,
    id: number,
    meta: StreamMeta,
    sendCredit: number,
    windowSize: number,
    accepted: boolean,
  ) {
    super({
      allowHalfOpen: true,
      readableHighWaterMark: READ_HIGH_WATER,
      writableHighWaterMark: WRITE_HIGH_WATER,
    });
    this.#owner = owner;
    this.id = id;
    this.meta = meta;
    this.accepted = accepted;
    this.sendCredit = sendCredit;
    this.recvWindow = windowSize;
    this.#windowSize = windowSize;
    this.#creditThreshold = windowSize >>> 2;
  }

  /** Bytes of credit granted to the peer and not yet returned: what this stream may hold. */
  get held(): number {
    return this.#windowSize - this.recvWindow;
  }

  get localFin(): boolean {
    return this.#localFin;
  }

  get remoteFin(): boolean {
    return this.#remoteFin;
  }

  /**
   * Called as the stream leaves the session's table with both FINs passed: the bytes still queued for
   * a slow reader keep counting against the session bound until the reader takes them.
   */
  retainUnread(): number {
    this.#countedUnread = this.#queuedBytes;
    return this.#countedUnread;
  }

  /** Resets the stream with a wire code (docs/protocol.md §8) and destroys it without a local error. */
  reset(code: number = ErrorCode.CANCEL, reason = ''): void {
    this.#resetCode = code;
    this.#resetReason = reason;
    this.destroy();
  }

  // --- called by the session as frames arrive ---

  onData(payload: Buffer, fin: boolean): void {
    if (payload.length > 0) {
      if (this.#wantRead && this.#queue.length === 0 && this.readableLength === 0 && this.readableFlowing) {
        // A flowing reader with nothing buffered consumes it within push(): no copy, nothing held.
        this.#slab = null;
        this.#consumed += payload.length;
        this.#wantRead = this.push(payload);
      } else {
        this.#enqueue(payload);
        if (this.#wantRead) this.#drainQueue();
      }
    }
    if (fin) {
      this.#remoteFin = true;
      if (this.#queue.length === 0) this.#pushEnd();
      if (this.#localFin) this.#owner.finished(this);
    }
    this.#maybeReturnCredit();
  }

  onWindowUpdate(increment: number): void {
    const blocked = this.sendCredit === 0;
    this.sendCredit += increment;
    if (blocked && this.#sendCb !== null) this.flush();
  }

  onAck(): void {
    this.accepted = true;
    this.emit('accept');
  }

  onReset(code: number, reason: string): void {
    this.detached = true;
    this.destroy(new StreamResetError(code, reason, true));
  }

  /** The session ended under this stream: with the session's error, or aborted without one. */
  onSessionEnd(err: Error | null): void {
    this.detached = true;
    this.destroy(err ?? undefined);
  }

  // --- Duplex ---

  override _read(): void {
    this.#wantRead = true;
    this.#drainQueue();
    if (this.#queue.length === 0 && this.#remoteFin) this.#pushEnd();
    this.#maybeReturnCredit();
  }

  #drainQueue(): void {
    const queue = this.#queue;
    while (this.#wantRead && queue.length > 0) {
      const chunk = queue.shift()!;
      this.#queuedBytes -= chunk.length;
      this.#consumed += chunk.length;
      if (this.#countedUnread > 0) this.#releaseCounted(chunk.length);
      this.#wantRead = this.push(chunk);
    }
    // Packed pieces may still wait in the Readable's own buffer: keep filling the same slab then.
    if (queue.length === 0 && this.readableLength === 0) this.#slab = null;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.#sendBuf = chunk;
    this.#sendOffset = 0;
    this.#sendCb = cb;
    this.flush();
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    let total = 0;
    for (const c of chunks) total += c.chunk.length;
    if (total <= this.#owner.maxFrameData) {
      // Small writes that piled up go out as one frame, not a 12-byte header each.
      return this._write(
        Buffer.concat(
          chunks.map((c) => c.chunk),
          total,
        ),
        'binary',
        cb,
      );
    }
    this.#sendList = chunks.map((c) => c.chunk);
    this.#sendIndex = 0;
    this.#sendBuf = this.#sendList[0]!;
    this.#sendOffset = 0;
    this.#sendCb = cb;
    this.flush();
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.detached) return cb();
    this.#localFin = true;
    this.#owner.sendData(this, EMPTY, true);
    if (this.#remoteFin) this.#owner.finished(this);
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (this.#countedUnread > 0) this.#releaseCounted(this.#countedUnread);
    this.#queue = [];
    this.#queuedBytes = 0;
    this.#slab = null;
    this.#sendBuf = EMPTY;
    this.#sendList = null;
    // A write cut short must still call back, or its caller (and end()'s) would wait forever.
    const pendingWrite = this.#sendCb;
    this.#sendCb = null;
    pendingWrite?.(err ?? new SluiceError('SLUICE_ERR_STREAM_RESET', 'stream destroyed during a write'));
    if (!this.detached) {
      const code = err instanceof SluiceError && err.wireCode !== undefined ? err.wireCode : this.#resetCode;
      this.#owner.resetStream(this, code, this.#resetReason || (err?.message ?? ''));
    }
    cb(err);
  }

  /** Sends as much of the pending write as credit and the transport allow. Called by the session too. */
  flush(): void {
    const owner = this.#owner;
    while (this.#sendCb !== null) {
      const remaining = this.#sendBuf.length - this.#sendOffset;
      if (remaining === 0) {
        if (!this.#nextBuffer()) {
          const cb = this.#sendCb;
          this.#sendCb = null;
          this.#sendBuf = EMPTY;
          cb();
        }
        continue;
      }
      if (this.sendCredit === 0 || this.destroyed) return;
      if (!owner.canWrite) return owner.queueWriter(this);
      const n = Math.min(remaining, this.sendCredit, owner.maxFrameData);
      const start = this.#sendOffset;
      const piece = n === this.#sendBuf.length ? this.#sendBuf : this.#sendBuf.subarray(start, start + n);
      this.#sendOffset += n;
      this.sendCredit -= n;
      owner.sendData(this, piece, false);
    }
  }

  #nextBuffer(): boolean {
    const list = this.#sendList;
    if (list === null || this.#sendIndex + 1 >= list.length) {
      this.#sendList = null;
      return false;
    }
    this.#sendIndex += 1;
    this.#sendBuf = list[this.#sendIndex]!;
    this.#sendOffset = 0;
    return true;
  }

  /**
   * Payloads are views into the transport's read buffers. A small view kept waiting would pin its whole
   * backing buffer (a 1-byte piece can hold a 64 KiB socket read), and every queued piece is also a
   * Buffer object of its own, so the window would bound bytes but neither memory nor object count.
   * Small pieces are therefore copied into a slab of the stream's own, and a piece that lands right
   * after the previous one in the slab extends that queue entry instead of adding one. A view spanning
   * most of its backing store is queued as it is. What a stalled stream holds stays near its window in
   * bytes and near window / 16 KiB in entries.
   */
  #enqueue(view: Buffer): void {
    const n = view.length;
    this.#queuedBytes += n;
    const queue = this.#queue;
    if (n * 2 >= view.buffer.byteLength) return void queue.push(view);
    if (n >= SMALL_PIECE) {
      const copy = Buffer.allocUnsafeSlow(n);
      view.copy(copy);
      return void queue.push(copy);
    }
    let slab = this.#slab;
    if (slab === null || slab.length - this.#slabUsed < n) {
      const size = slab === null ? MIN_SLAB : Math.min(MAX_SLAB, slab.length * 2);
      slab = this.#slab = Buffer.allocUnsafeSlow(Math.max(size, n));
      this.#slabUsed = 0;
    }
    const start = this.#slabUsed;
    view.copy(slab, start);
    this.#slabUsed = start + n;
    const last = queue.length > 0 ? queue[queue.length - 1]! : undefined;
    if (
      last !== undefined &&
      last.buffer === slab.buffer &&
      last.byteOffset + last.length === slab.byteOffset + start
    ) {
      queue[queue.length - 1] = slab.subarray(last.byteOffset - slab.byteOffset, start + n);
    } else {
      queue.push(slab.subarray(start, start + n));
    }
  }

  #releaseCounted(bytes: number): void {
    const n = Math.min(bytes, this.#countedUnread);
    this.#countedUnread -= n;
    this.#owner.releaseUnread(n);
  }

  #pushEnd(): void {
    if (this.#endPushed) return;
    this.#endPushed = true;
    this.push(null);
  }

  #maybeReturnCredit(): void {
    // Credit goes back in batches of a quarter window; after the peer's FIN it is never needed again.
    if (this.#consumed >= this.#creditThreshold && !this.#remoteFin && !this.detached) {
      const bytes = this.#consumed;
      this.#consumed = 0;
      this.#owner.returnCredit(this, bytes);
    }
  }
}
