// One stream of a session: an ordered byte stream in each direction with credit flow control
// (docs/protocol.md §5–6), exposed as a Node Duplex. The session owns the wire; a stream only asks it
// to send frames, and the session calls the methods below as frames arrive. Only this file writes a
// stream's fields: its lifecycle is one named state (StreamState), moved by TRANSITIONS alone.
import { Duplex, type Readable, type Writable } from 'node:stream';
import { SluiceError, StreamResetError } from '../errors.js';
import { ErrorCode } from '../protocol/constants.js';

/** Stream-open metadata carried by SYN (docs/protocol.md §5). The tunnel treats it as opaque. */
export type StreamMeta = Record<string, unknown>;

/**
 * The lifecycle of a stream, after yamux's streamState. The open handshake and the two half-closes
 * overlap: an opener may end its side before the ACK comes, and a FIN may arrive before the acceptor
 * has sent its ACK, so the states before `established` carry their half-close too.
 *
 * - `synSent`: opened here, SYN sent, no ACK yet. `synSentLocalClosed`: and our FIN sent.
 *   `synSentRemoteClosed`: the peer's FIN came before its ACK (a peer that breaks §5's order).
 * - `synReceived`: opened by the peer, our ACK not sent yet (it rides with our first frame, §5).
 *   `synReceivedRemoteClosed`: and the peer's FIN has come.
 * - `established`, `localClosed` (our FIN sent), `remoteClosed` (the peer's FIN received).
 * - `closed`: both FINs passed. `reset`: RST either way, a refusal, or the session ended under it.
 *   Both are terminal: the session no longer routes frames to the stream.
 */
export type StreamState =
  | 'synSent'
  | 'synSentLocalClosed'
  | 'synSentRemoteClosed'
  | 'synReceived'
  | 'synReceivedRemoteClosed'
  | 'established'
  | 'localClosed'
  | 'remoteClosed'
  | 'closed'
  | 'reset';

/** What moves a stream from one state to the next. */
export type StreamEvent = 'ackReceived' | 'ackSent' | 'finSent' | 'finReceived' | 'reset';

/**
 * Every legal transition; an event missing from a state's row is a bug, and throws. The session checks
 * the wire before it reports an event (a second FIN or an unexpected ACK is a protocol error there),
 * so no peer can reach a missing entry. A test pins this table.
 */
export const TRANSITIONS: Readonly<Record<StreamState, Readonly<Partial<Record<StreamEvent, StreamState>>>>> =
  {
    synSent: {
      ackReceived: 'established',
      finSent: 'synSentLocalClosed',
      finReceived: 'synSentRemoteClosed',
      reset: 'reset',
    },
    synSentLocalClosed: { ackReceived: 'localClosed', finReceived: 'closed', reset: 'reset' },
    synSentRemoteClosed: { ackReceived: 'remoteClosed', finSent: 'closed', reset: 'reset' },
    // No finSent here: our FIN is a DATA frame, and the ACK always goes out before it.
    synReceived: { ackSent: 'established', finReceived: 'synReceivedRemoteClosed', reset: 'reset' },
    synReceivedRemoteClosed: { ackSent: 'remoteClosed', reset: 'reset' },
    established: { finSent: 'localClosed', finReceived: 'remoteClosed', reset: 'reset' },
    localClosed: { finReceived: 'closed', reset: 'reset' },
    remoteClosed: { finSent: 'closed', reset: 'reset' },
    closed: {},
    reset: {},
  };

/** What a stream needs from its session. Implemented by Session; kept narrow so streams stay testable. */
export interface StreamOwner {
  readonly maxFrameData: number;
  /** False while the transport is congested: the stream must wait for `onWritable`. */
  readonly canWrite: boolean;
  /** Writes DATA (a pending ACK first, reported with `onAckSent`). */
  sendData(stream: Stream, chunk: Buffer, fin: boolean): void;
  /** Queues the stream, once per wait, for `onWritable` when the transport drains. */
  queueWriter(stream: Stream): void;
  /** The reader took `bytes`, which the stream has added back to its window: grant them to the peer. */
  returnCredit(stream: Stream, bytes: number): void;
  /** A retired stream's reader took `bytes` that still counted against the session bound. */
  releaseUnread(bytes: number): void;
  /** Sends RST and forgets the stream, which the session reports with `detach`. */
  resetStream(stream: Stream, code: number, reason: string): void;
  /** Both FINs passed: the stream is `closed` and leaves the table. */
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

  #state: StreamState;
  /** The last state before `closed` or `reset`: what `accepted` and the FIN getters report after it. */
  #endedFrom: StreamState;
  /** Bytes we may still send: the peer's credit to us. */
  #sendCredit: number;
  /** Bytes the peer may still send us before it needs WINDOW_UPDATE. */
  #recvWindow: number;
  /** True while the stream waits in the session's writer queue for the transport to drain. */
  #writerQueued = false;

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
  /** Set by readDirect: payloads go to it rather than through the Readable. */
  #sink: ((chunk: Buffer) => boolean) | null = null;
  /** The sink said it is full, or pause() was called: payloads queue until resume(). */
  #sinkHeld = false;
  /** Bytes handed to the reader whose credit has not been returned yet. */
  #consumed = 0;
  #endPushed = false;

  // Send side: the write in progress, cut into frames as credit and the transport allow.
  #sendBuf: Buffer = EMPTY;
  #sendList: Buffer[] | null = null;
  #sendIndex = 0;
  #sendOffset = 0;
  #sendCb: ((err?: Error | null) => void) | null = null;

  #resetCode: number = ErrorCode.CANCEL;
  #resetReason = '';

  constructor(
    owner: StreamOwner,
    id: number,
    meta: StreamMeta,
    sendCredit: number,
    windowSize: number,
    /** `synSent` for a stream opened here, `synReceived` for one the peer opened. */
    initial: 'synSent' | 'synReceived',
  ) {
    super({
      allowHalfOpen: true,
      readableHighWaterMark: READ_HIGH_WATER,
      writableHighWaterMark: WRITE_HIGH_WATER,
    });
    this.#owner = owner;
    this.id = id;
    this.meta = meta;
    this.#state = initial;
    this.#endedFrom = initial;
    this.#sendCredit = sendCredit;
    this.#recvWindow = windowSize;
    this.#windowSize = windowSize;
    this.#creditThreshold = windowSize >>> 2;
  }

  get state(): StreamState {
    return this.#state;
  }

  /** True once the peer has ACKed our SYN, or at once for a stream the peer opened. */
  get accepted(): boolean {
    const s = this.#live();
    return s !== 'synSent' && s !== 'synSentLocalClosed' && s !== 'synSentRemoteClosed';
  }

  /** A stream the peer opened, taken but not ACKed yet: the ACK goes out with its first frame. */
  get ackPending(): boolean {
    const s = this.#state;
    return s === 'synReceived' || s === 'synReceivedRemoteClosed';
  }

  /** True once our FIN went out. */
  get localFin(): boolean {
    const s = this.#state === 'reset' ? this.#endedFrom : this.#state;
    return s === 'localClosed' || s === 'closed' || s === 'synSentLocalClosed';
  }

  /** True once the peer's FIN arrived. */
  get remoteFin(): boolean {
    const s = this.#state === 'reset' ? this.#endedFrom : this.#state;
    return (
      s === 'remoteClosed' || s === 'closed' || s === 'synReceivedRemoteClosed' || s === 'synSentRemoteClosed'
    );
  }

  /** True once the session no longer routes frames to this stream (both FINs, or reset). */
  get detached(): boolean {
    return this.#state === 'closed' || this.#state === 'reset';
  }

  /** Bytes we may still send: the peer's credit to us. */
  get sendCredit(): number {
    return this.#sendCredit;
  }

  /** Bytes the peer may still send us before it needs WINDOW_UPDATE. */
  get recvWindow(): number {
    return this.#recvWindow;
  }

  /** True while the stream waits in the session's writer queue for the transport to drain. */
  get writerQueued(): boolean {
    return this.#writerQueued;
  }

  /** Bytes of credit granted to the peer and not yet returned: what this stream may hold. */
  get held(): number {
    return this.#windowSize - this.#recvWindow;
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

  /**
   * write(chunk) without the Writable's queue, callback and tick when nothing waits ahead of it and
   * the credit and the transport take it whole in one frame: the common case of a relay's small
   * reads. Otherwise it is write(chunk). Returns what write() would: false when the caller should
   * wait for 'drain'.
   */
  send(chunk: Buffer): boolean {
    const n = chunk.length;
    if (
      n > 0 &&
      n <= this.#sendCredit &&
      this.#sendCb === null &&
      this.writableLength === 0 &&
      this.writableCorked === 0 &&
      n <= this.#owner.maxFrameData &&
      this.writable &&
      this.#owner.canWrite
    ) {
      this.#sendCredit -= n;
      this.#owner.sendData(this, chunk, false);
      return true;
    }
    return this.write(chunk);
  }

  // --- called by the session as frames arrive and leave ---

  /** The peer spent `bytes` of the credit we granted: DATA of that size arrived for this stream. */
  chargeWindow(bytes: number): void {
    this.#recvWindow -= bytes;
  }

  onData(payload: Buffer, fin: boolean): void {
    if (payload.length > 0) {
      const sink = this.#sink;
      if (sink !== null) {
        if (this.#queue.length === 0 && !this.#sinkHeld) {
          this.#consumed += payload.length;
          if (!sink(payload)) this.#sinkHeld = true;
        } else {
          this.#enqueue(payload);
        }
      } else if (this.#queue.length === 0 && this.readableLength === 0 && this.readableFlowing === true) {
        // A flowing reader with nothing buffered consumes it within push(), or on the next tick when
        // it has not called _read yet: no copy, nothing held. Not waiting for that first _read
        // matters for idle streams: a peer's first bytes often come in the same read as its SYN,
        // before pipe()'s resume has run, and a copy would leave the stream holding a slab for as
        // long as it stays idle (about 600 bytes, on most of the agent's idle streams).
        this.#slab = null;
        this.#consumed += payload.length;
        this.#wantRead = this.push(payload);
      } else {
        this.#enqueue(payload);
        if (this.#wantRead) this.#drainQueue();
      }
    }
    if (fin) {
      this.#to('finReceived');
      if (this.#queue.length === 0) this.#pushEnd();
      if (this.#state === 'closed') this.#owner.finished(this);
    }
    this.#maybeReturnCredit();
  }

  onWindowUpdate(increment: number): void {
    const blocked = this.#sendCredit === 0;
    this.#sendCredit += increment;
    if (blocked && this.#sendCb !== null) this.flush();
  }

  /** The peer's ACK of our SYN arrived. */
  onAck(): void {
    this.#to('ackReceived');
    this.emit('accept');
  }

  /** The session wrote our ACK of the peer's SYN. */
  onAckSent(): void {
    this.#to('ackSent');
  }

  /** The transport drained and this stream's turn in the writer queue came. */
  onWritable(): void {
    this.#writerQueued = false;
    this.flush();
  }

  /**
   * The session stopped routing frames to this stream: it was reset (either way) or refused. A stream
   * that ended with both FINs is already `closed`.
   */
  detach(): void {
    if (!this.detached) this.#to('reset');
  }

  onReset(code: number, reason: string): void {
    this.detach();
    this.destroy(new StreamResetError(code, reason, true));
  }

  /** The session ended under this stream: with the session's error, or aborted without one. */
  onSessionEnd(err: Error | null): void {
    this.detach();
    this.destroy(err ?? undefined);
  }

  #to(event: StreamEvent): void {
    const from = this.#state;
    const to = TRANSITIONS[from][event];
    if (to === undefined) throw new Error(`stream ${this.id}: ${event} is not a transition from ${from}`);
    if (to === 'closed' || to === 'reset') this.#endedFrom = from;
    this.#state = to;
  }

  /** The state that `accepted` reads: the one before the end, once the stream has ended. */
  #live(): StreamState {
    return this.detached ? this.#endedFrom : this.#state;
  }

  // --- Duplex ---

  /**
   * Hands every payload from now on to `sink` as it arrives, rather than through the Readable: no
   * push, 'data' event or read tick per frame, which is most of what a relay's small messages cost
   * here. Bytes the Readable holds already go first. `sink` returns false when its own writer is
   * full, as write() does; payloads then wait in the stream (within its window, so the peer is held
   * by its credit) until resume(), and pause() holds them the same way. 'end' still comes once the
   * peer's FIN is reached, and 'error' and 'close' as before. Nothing may listen for 'data'.
   */
  readDirect(sink: (chunk: Buffer) => boolean): void {
    if (this.listenerCount('data') > 0) throw new Error('readDirect: the stream has a data listener');
    this.#sink = sink;
    this.#sinkHeld = false;
    // What the Readable buffered came before the queue; with #sink set, reading it pushes no more.
    for (let chunk = this.read() as Buffer | null; chunk !== null; chunk = this.read() as Buffer | null) {
      if (!sink(chunk)) this.#sinkHeld = true;
    }
    // Flowing, with nothing pushed, so that the FIN's push(null) still ends the Readable.
    super.resume();
    this.#deliver();
  }

  override pause(): this {
    if (this.#sink === null) return super.pause();
    this.#sinkHeld = true;
    return this;
  }

  override resume(): this {
    if (this.#sink === null) return super.resume();
    if (!this.#sinkHeld) return this;
    this.#sinkHeld = false;
    this.#deliver();
    return this;
  }

  override _read(): void {
    this.#wantRead = true;
    // A direct reader takes its bytes from onData and resume(), never from here: readDirect's read()
    // calls this before it returns what the Readable held, which came first.
    if (this.#sink !== null) return void this.#endAndCredit();
    this.#deliver();
  }

  /** Hands queued bytes to the reader (the Readable, or a direct sink), then the end, then credit. */
  #deliver(): void {
    this.#drainQueue();
    this.#endAndCredit();
  }

  #endAndCredit(): void {
    if (this.#queue.length === 0 && this.remoteFin) this.#pushEnd();
    this.#maybeReturnCredit();
  }

  #drainQueue(): void {
    const queue = this.#queue;
    const sink = this.#sink;
    while (queue.length > 0 && (sink === null ? this.#wantRead : !this.#sinkHeld && !this.destroyed)) {
      const chunk = queue.shift()!;
      this.#queuedBytes -= chunk.length;
      this.#consumed += chunk.length;
      if (this.#countedUnread > 0) this.#releaseCounted(chunk.length);
      if (sink === null) this.#wantRead = this.push(chunk);
      else if (!sink(chunk)) this.#sinkHeld = true;
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
    // sendData writes a pending ACK first, so a stream the peer opened is past synReceived here.
    this.#owner.sendData(this, EMPTY, true);
    this.#to('finSent');
    if (this.#state === 'closed') this.#owner.finished(this);
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
      if (this.#sendCredit === 0 || this.destroyed) return;
      if (!owner.canWrite) return this.#waitForTransport();
      const n = Math.min(remaining, this.#sendCredit, owner.maxFrameData);
      const start = this.#sendOffset;
      const piece = n === this.#sendBuf.length ? this.#sendBuf : this.#sendBuf.subarray(start, start + n);
      this.#sendOffset += n;
      this.#sendCredit -= n;
      owner.sendData(this, piece, false);
    }
  }

  #waitForTransport(): void {
    if (this.#writerQueued) return;
    this.#writerQueued = true;
    this.#owner.queueWriter(this);
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
    if (this.#consumed >= this.#creditThreshold && this.#peerMaySend()) {
      const bytes = this.#consumed;
      this.#consumed = 0;
      this.#recvWindow += bytes;
      this.#owner.returnCredit(this, bytes);
    }
  }

  /** Neither the peer's FIN nor the end of the stream has come: DATA may still arrive. */
  #peerMaySend(): boolean {
    const s = this.#state;
    return (
      s === 'established' ||
      s === 'localClosed' ||
      s === 'synReceived' ||
      s === 'synSent' ||
      s === 'synSentLocalClosed'
    );
  }
}

/** `to.write(chunk)`, through the tunnel stream's direct path (Stream.send) when `to` is one. */
export function writeToward(to: Writable, chunk: Buffer): boolean {
  return to instanceof Stream ? to.send(chunk) : to.write(chunk);
}

/**
 * Calls `sink` with each chunk `from` reads, pausing `from` while `sink` returns false (the caller
 * resumes it on its writer's 'drain'). A tunnel stream that nothing else reads hands its payloads
 * over directly (Stream.readDirect); any other source through 'data'.
 */
export function readInto(from: Readable, sink: (chunk: Buffer) => boolean): void {
  // Another reader of 'data' (a byte counter) keeps the Readable path, so that both see every byte.
  if (from instanceof Stream && from.listenerCount('data') === 0) return from.readDirect(sink);
  from.on('data', (chunk: Buffer) => {
    if (!sink(chunk)) from.pause();
  });
}
