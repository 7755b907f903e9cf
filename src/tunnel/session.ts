// A multiplexed session over one transport (docs/protocol.md). It owns the wire: frame dispatch,
// per-stream credit, the session's buffer bound, fair scheduling of writers on a congested transport,
// liveness (PING, write stall) and GO_AWAY drain. The handshake before all that is handshake.ts;
// streams are Duplexes (stream.ts) that the session moves only through their methods.
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { IdTable, LiveSet } from '../collections.js';
import { codeForWire, ProtocolError, SessionError, SluiceError, StreamResetError } from '../errors.js';
import {
  decodeCodeReason,
  decodeJsonObject,
  describeFrame,
  encodeAck,
  encodeGoAway,
  encodeHeader,
  encodeJsonFrame,
  encodeSynFrame,
  encodePing,
  encodeRst,
  encodeWindowUpdate,
  FrameDecoder,
  writeHeader,
} from '../protocol/codec.js';
import { ErrorCode, errorCodeName, Flag, FrameType, HEADER_SIZE, Limits } from '../protocol/constants.js';
import {
  ClientHandshake,
  type ClientHello,
  encodeHello,
  type Established,
  type Handshake,
  type HandshakeHost,
  type PeerInfo,
  type ServerAuth,
  ServerHandshake,
} from './handshake.js';
import { resolveSessionOptions, type SessionOptions, type SessionOptionsInput } from './options.js';
import { Stream, type StreamMeta, type StreamOwner } from './stream.js';

export type { AuthResult, Hello, PeerInfo } from './handshake.js';

export type Role = 'client' | 'server';

interface CommonOptions {
  options?: SessionOptionsInput;
  logger?: Logger;
  /**
   * Receives the streams the peer opens, from the first frame after the handshake on. A listener
   * added with `on('stream')` after `connect()` resolves can miss a stream whose SYN arrived in the
   * same read as WELCOME; such a stream would be refused.
   */
  onStream?: (stream: Stream) => void;
  /**
   * A second form of SYN payload, used once both sides have `cap` among their shared caps: a payload
   * whose first byte is below 0x09 is never JSON, so the receiver tells the two apart by it.
   */
  synCodec?: SynCodec;
}

/** A compact form of SYN metadata (docs/protocol.md §5, "Open"), agreed on in the handshake's caps. */
export interface SynCodec {
  readonly cap: string;
  /** The payload for `meta`, its first byte below 0x09; null sends JSON instead. */
  encode(meta: StreamMeta): Buffer | null;
  /** Throws a ProtocolError for a payload it cannot read. */
  decode(payload: Buffer): StreamMeta;
}

export interface ConnectOptions extends CommonOptions {
  hello: ClientHello;
}

export interface AcceptOptions extends CommonOptions, ServerAuth {}

export interface SessionStats {
  streams: number;
  pendingOpens: number;
  heldBytes: number;
  bytesIn: number;
  bytesOut: number;
  rttMs: number;
}

interface PendingPing {
  at: number;
  resolve: (rtt: number) => void;
  reject: (err: Error) => void;
}

const State = { HANDSHAKE: 0, OPEN: 1, CLOSED: 2 } as const;
type State = (typeof State)[keyof typeof State];

/** A peer that does not read gets no PONGs past this much unsent output (ping-flood guard). */
const PONG_BACKLOG_LIMIT = 1024 * 1024;
/**
 * Past this much unsent output we stop reading the transport until it drains: every SYN, PING and
 * DATA we read can make us answer, so a peer that sends but never reads must not grow our buffer.
 */
const READ_PAUSE_BACKLOG = 4 * 1024 * 1024;
/** How long a graceful transport end may take before the socket is destroyed. */
const END_LINGER_MS = 5000;
/**
 * A DATA frame with at most this much payload is copied, header and all, into the session's batch
 * rather than written as two buffers of its own: for a small payload the copy costs less than the
 * writes, and the frames of one turn leave as one buffer. Larger payloads go out as they are.
 */
const SMALL_DATA = 2 * 1024;
/** A SYN payload whose first byte is below this is not JSON (which may start only with `{` or blank). */
const COMPACT_BELOW = 0x09;
/** The batch's size: a full one is written at once, and the next one allocated. */
const BATCH_SIZE = 16 * 1024;
/**
 * How long an ACK may wait for the stream's first frame. A request's answer usually comes within a
 * few milliseconds, and then the ACK rides in the same write as the answer's first frame, which
 * saves the acceptor a write and the opener a wakeup and a read per stream. A slow answer (a long
 * poll, an upgrade waiting on its target) gets its ACK alone once this delay has passed.
 */
const ACK_DELAY_MS = Limits.MAX_ACK_DELAY_MS;

const noopLogger = {
  trace() {},
  debug() {},
  info() {},
  warn() {},
  error() {},
  isLevelEnabled: () => false,
  child() {
    return noopLogger;
  },
} as unknown as Logger;

export class Session extends EventEmitter implements StreamOwner {
  readonly role: Role;
  readonly options: SessionOptions;
  readonly maxFrameData: number;
  /** Session id from the handshake, for logs on both sides. */
  id = '';
  peer: PeerInfo | null = null;
  /** The peer's initial per-stream window: our send credit on each new stream. */
  peerWindow = 0;
  /** Last measured ping round trip in ms, or -1 before the first. */
  rttMs = -1;
  bytesIn = 0;
  bytesOut = 0;

  readonly #transport: Duplex;
  readonly #decoder: FrameDecoder;
  #log: Logger;
  readonly #trace: boolean;
  #state: State = State.HANDSHAKE;
  /** Not a Map: its dropped hash tables would keep finished streams from the scavenger (collections.ts). */
  readonly #streams = new IdTable<Stream>();
  /**
   * Opens awaiting ACK, id → deadline; insertion order is deadline order. A Map holds its numbers
   * well enough: a table it drops keeps only numbers alive, not streams.
   */
  readonly #pendingOpens = new Map<number, number>();
  #nextId: number;
  #lastPeerId = 0;
  #held = 0;
  #localGoAway = false;
  #remoteGoAway = false;
  #writers: Stream[] = [];
  #corked = false;
  /**
   * Small DATA frames of this turn, copied in (SMALL_DATA). Bytes before #batchFrom are written
   * already and stay untouched: the transport may still hold them.
   */
  #batch: Buffer | null = null;
  #batchFrom = 0;
  #batchTo = 0;
  /** Streams the peer opened that wait for their ACK (see #onSyn), and the timer that bounds it. */
  readonly #unacked = new LiveSet<Stream>('session.unacked');
  #ackTimer: NodeJS.Timeout | null = null;
  readonly #onAckDelay = (): void => this.#flushAcks();
  #readPaused = false;
  #lastRecvAt = Date.now();
  #nextPingAt = 0;
  #stallSince = 0;
  #pingSeq = 0;
  readonly #pings = new Map<number, PendingPing>();
  #tickTimer: NodeJS.Timeout | null = null;
  #openTimer: NodeJS.Timeout | null = null;
  #graceTimer: NodeJS.Timeout | null = null;
  /** Until the open: the frames and the timeout of this side's handshake. */
  #handshake: Handshake | null;
  /** The SYN codec this side offers, and the one in use once the handshake found it shared. */
  readonly #offeredCodec: SynCodec | null;
  #synCodec: SynCodec | null = null;
  #settle: { resolve: (s: Session) => void; reject: (e: Error) => void } | null = null;
  #closed: Promise<void>;
  #resolveClosed!: () => void;

  private constructor(transport: Duplex, role: Role, common: CommonOptions, auth: ServerAuth | null) {
    super();
    this.role = role;
    this.options = resolveSessionOptions(common.options ?? {});
    this.maxFrameData = this.options.maxFrameData;
    this.#transport = transport;
    this.#offeredCodec = common.synCodec ?? null;
    this.#log = common.logger ?? noopLogger;
    this.#trace = this.#log.isLevelEnabled('trace');
    this.#nextId = role === 'client' ? 1 : 2;
    this.#decoder = new FrameDecoder(this.#onFrame);
    this.#closed = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
    if (common.onStream !== undefined) this.on('stream', common.onStream);
    transport.on('data', this.#onTransportDataBound);
    transport.on('drain', this.#onDrainBound);
    transport.on('end', this.#onEndBound);
    transport.on('close', this.#onCloseBound);
    transport.on('error', (err: Error) =>
      this.#teardown(
        new SessionError('SLUICE_ERR_TRANSPORT_CLOSED', `transport error: ${err.message}`, undefined, {
          cause: err,
        }),
      ),
    );
    const host: HandshakeHost = {
      log: this.#log,
      write: (frame) => this.#write(frame),
      fail: (err, goAwayCode, reason) => this.#teardown(err, goAwayCode, reason),
      established: (result) => this.#opened(result),
      inHandshake: () => this.#state === State.HANDSHAKE,
    };
    const timeout = this.options.handshakeTimeout;
    this.#handshake =
      auth === null
        ? new ClientHandshake(host, timeout)
        : new ServerHandshake(host, timeout, auth, this.options.window);
  }

  /** Client side: sends HELLO and resolves once WELCOME arrives. Rejects with the refusal's code. */
  static connect(transport: Duplex, opts: ConnectOptions): Promise<Session> {
    const options = resolveSessionOptions(opts.options ?? {});
    let hello: Buffer;
    try {
      hello = encodeHello(opts.hello, options.window);
    } catch (err) {
      // Nothing is attached to the transport yet: fail before anything needs cleaning up.
      return Promise.reject(err as Error);
    }
    const session = new Session(transport, 'client', { ...opts, options }, null);
    const done = session.#handshakePromise();
    session.#write(hello);
    return done;
  }

  /** Server side: waits for HELLO, asks `authenticate`, and answers WELCOME or a GO_AWAY refusal. */
  static accept(transport: Duplex, opts: AcceptOptions): Promise<Session> {
    const session = new Session(transport, 'server', opts, opts);
    return session.#handshakePromise();
  }

  get closed(): boolean {
    return this.#state === State.CLOSED;
  }

  /** True once either side sent GO_AWAY: no new streams go on this session. */
  get draining(): boolean {
    return this.#localGoAway || this.#remoteGoAway;
  }

  /** True once this side sent GO_AWAY (it is draining the session), whether or not the peer did. */
  get goAwaySent(): boolean {
    return this.#localGoAway;
  }

  get streamCount(): number {
    return this.#streams.size;
  }

  stats(): SessionStats {
    return {
      streams: this.#streams.size,
      pendingOpens: this.#pendingOpens.size,
      heldBytes: this.#held,
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      rttMs: this.rttMs,
    };
  }

  /**
   * Opens a stream. The returned stream is writable at once, within the peer's initial window; it
   * emits 'accept' on ACK and errors with SLUICE_ERR_STREAM_REFUSED if the peer refuses it.
   * Throws a SluiceError when no stream can be opened here (closed, draining, limits).
   */
  open(meta: StreamMeta): Stream {
    if (this.#state !== State.OPEN) throw new SessionError('SLUICE_ERR_SESSION_CLOSED', 'session is closed');
    if (this.draining) throw new SessionError('SLUICE_ERR_GOING_AWAY', 'session is draining (GO_AWAY)');
    if (this.#streams.size >= this.options.maxStreams) {
      throw new SluiceError(
        'SLUICE_ERR_TOO_MANY_STREAMS',
        `session has ${this.#streams.size} streams open, the limit`,
      );
    }
    if (this.#pendingOpens.size >= this.options.maxPendingOpens) {
      throw new SluiceError(
        'SLUICE_ERR_TOO_MANY_PENDING_OPENS',
        `${this.#pendingOpens.size} opens already await ACK, the limit`,
      );
    }
    const id = this.#nextId;
    if (id > Limits.MAX_STREAM_ID) {
      this.#goAway('stream ids exhausted');
      throw new SessionError(
        'SLUICE_ERR_STREAM_IDS_EXHAUSTED',
        'stream ids exhausted; the session is draining',
      );
    }
    let syn: Buffer;
    try {
      const compact = this.#synCodec === null ? null : this.#synCodec.encode(meta);
      syn = compact === null ? encodeJsonFrame(FrameType.SYN, id, meta) : encodeSynFrame(id, compact);
    } catch (err) {
      throw new SluiceError('SLUICE_ERR_FRAME_SIZE', (err as Error).message);
    }
    this.#nextId = id + 2;
    const stream = new Stream(this, id, meta, this.peerWindow, this.options.window, 'synSent');
    this.#streams.set(id, stream);
    this.#pendingOpens.set(id, Date.now() + this.options.openTimeout);
    this.#armOpenTimer();
    this.#write(syn);
    return stream;
  }

  /** Sends a PING and resolves with the round trip in ms. Rejects if the session ends first. */
  ping(): Promise<number> {
    if (this.#state !== State.OPEN) {
      return Promise.reject(new SessionError('SLUICE_ERR_SESSION_CLOSED', 'session is closed'));
    }
    return new Promise((resolve, reject) => this.#sendPing({ resolve, reject }));
  }

  /**
   * Graceful drain: GO_AWAY(NO_ERROR), no new streams either way, and the transport closes once the
   * streams in flight are done or the grace period ends (streams left then are reset with CANCEL).
   */
  close(gracePeriod: number = this.options.gracePeriod): Promise<void> {
    if (this.#state === State.HANDSHAKE) {
      this.#teardown(new SessionError('SLUICE_ERR_SESSION_CLOSED', 'session closed during the handshake'));
    }
    if (this.#state === State.CLOSED) return this.#closed;
    this.#goAway('draining');
    if (this.#graceTimer === null && this.#state === State.OPEN) {
      this.#graceTimer = setTimeout(() => this.#onGraceExpired(), gracePeriod);
      this.#graceTimer.unref();
    }
    this.#maybeFinishDrain();
    return this.#closed;
  }

  /**
   * Tears the session down at once: streams end with `err`, or are aborted quietly without one. An
   * error that carries a wire code (a ProtocolError, or e.g. a revoked token's FORBIDDEN) goes to the
   * peer first as GO_AWAY(code, message), so the peer can tell why; any other closes the transport.
   */
  destroy(err?: Error): void {
    const wire = err instanceof SluiceError ? err.wireCode : undefined;
    this.#teardown(err ?? null, wire === ErrorCode.NO_ERROR ? undefined : wire);
  }

  // --- StreamOwner: called by streams ---

  get canWrite(): boolean {
    return !this.#transport.writableNeedDrain && this.#state !== State.CLOSED;
  }

  sendData(stream: Stream, chunk: Buffer, fin: boolean): void {
    if (this.#state === State.CLOSED) return;
    if (stream.ackPending) this.#ack(stream);
    const n = chunk.length;
    if (n <= SMALL_DATA) return this.#batchData(stream.id, fin ? Flag.FIN : 0, chunk);
    this.#write(encodeHeader(FrameType.DATA, fin ? Flag.FIN : 0, stream.id, n));
    this.#write(chunk);
  }

  #batchData(id: number, flags: number, payload: Buffer): void {
    const size = HEADER_SIZE + payload.length;
    let batch = this.#batch;
    if (batch === null || batch.length - this.#batchTo < size) {
      this.#flushBatch();
      batch = this.#batch = Buffer.allocUnsafeSlow(BATCH_SIZE);
      this.#batchFrom = this.#batchTo = 0;
    }
    this.#cork();
    const at = this.#batchTo;
    writeHeader(batch, at, FrameType.DATA, flags, id, payload.length);
    payload.copy(batch, at + HEADER_SIZE);
    this.#batchTo = at + size;
  }

  /** Writes what the batch holds, before any other frame and before the uncork. */
  #flushBatch(): void {
    const from = this.#batchFrom;
    const to = this.#batchTo;
    if (to === from) return;
    this.#batchFrom = to;
    // A transport destroyed under the session takes nothing more; what it held is lost with it.
    if (this.#transport.destroyed) return;
    this.#send(this.#batch!.subarray(from, to));
  }

  queueWriter(stream: Stream): void {
    this.#writers.push(stream);
  }

  returnCredit(stream: Stream, bytes: number): void {
    this.#held -= bytes;
    if (this.#state === State.CLOSED) return;
    if (stream.ackPending) this.#ack(stream);
    this.#write(encodeWindowUpdate(stream.id, bytes));
  }

  resetStream(stream: Stream, code: number, reason: string): void {
    if (stream.detached) return;
    if (this.#state !== State.CLOSED) {
      if (stream.ackPending) this.#ack(stream);
      this.#write(encodeRst(stream.id, code, reason));
    }
    this.#forget(stream);
  }

  finished(stream: Stream): void {
    this.#forget(stream);
    // Retired, but its unread bytes still count against the bound until its reader takes them.
    if (this.#state !== State.CLOSED) this.#held += stream.retainUnread();
  }

  releaseUnread(bytes: number): void {
    if (this.#state !== State.CLOSED) this.#held -= bytes;
  }

  // --- internals ---

  readonly #onTransportDataBound = (chunk: Buffer): void => this.#onTransportData(chunk);
  readonly #onDrainBound = (): void => this.#onDrain();
  readonly #onEndBound = (): void => this.#onTransportEnd('transport ended by peer');
  readonly #onCloseBound = (): void => this.#onTransportEnd('transport closed');

  #handshakePromise(): Promise<Session> {
    return new Promise((resolve, reject) => {
      this.#settle = { resolve, reject };
    });
  }

  #write(buf: Buffer): void {
    this.#cork();
    this.#flushBatch();
    this.#send(buf);
  }

  #cork(): void {
    if (this.#corked) return;
    // Every frame written in this turn of the event loop leaves in one writev (or one WebSocket
    // message): the frames that answer many sockets' reads of one poll phase share a syscall.
    // setImmediate rather than nextTick cut tunnel CPU per small request by about a tenth.
    this.#corked = true;
    this.#transport.cork();
    setImmediate(uncork, this, this.#transport);
  }

  #send(buf: Buffer): void {
    this.bytesOut += buf.length;
    if (!this.#transport.write(buf) && this.#stallSince === 0) this.#stallSince = Date.now();
  }

  /** @internal */
  uncorked(): void {
    this.#flushBatch();
    this.#corked = false;
  }

  #onTransportData(chunk: Buffer): void {
    if (this.#state === State.CLOSED) return;
    this.bytesIn += chunk.length;
    this.#lastRecvAt = Date.now();
    try {
      this.#decoder.push(chunk);
      if (this.#transport.writableLength > READ_PAUSE_BACKLOG && !this.closed) {
        this.#readPaused = true;
        this.#transport.pause();
      }
    } catch (err) {
      if (err instanceof ProtocolError) {
        this.#log.warn({ err: err.message, code: err.code }, 'protocol error; ending the session');
        this.#teardown(err, err.wireCode);
      } else {
        this.#teardown(
          new SessionError(
            'SLUICE_ERR_INTERNAL',
            `internal error: ${(err as Error).message}`,
            ErrorCode.INTERNAL_ERROR,
            {
              cause: err,
            },
          ),
          ErrorCode.INTERNAL_ERROR,
        );
      }
    }
  }

  #onDrain(): void {
    if (this.#state === State.CLOSED) return;
    this.#stallSince = 0;
    if (this.#readPaused) {
      this.#readPaused = false;
      this.#transport.resume();
    }
    // Round robin: each waiting stream sends until the transport fills again, then goes to the back.
    const writers = this.#writers;
    this.#writers = [];
    for (let i = 0; i < writers.length; i++) {
      const stream = writers[i]!;
      if (this.closed) return;
      if (!this.canWrite) {
        // The transport filled again: the rest keep their turn, ahead of streams queued meanwhile.
        this.#writers = writers.slice(i).concat(this.#writers);
        return;
      }
      stream.onWritable();
    }
  }

  #onTransportEnd(what: string): void {
    if (this.#state === State.CLOSED) return;
    if (this.#remoteGoAway) this.#refuseUnacknowledged();
    if (this.draining && this.#streams.size === 0) return this.#teardown(null);
    this.#teardown(new SessionError('SLUICE_ERR_TRANSPORT_CLOSED', what));
  }

  readonly #onFrame = (type: number, flags: number, id: number, payload: Buffer): void => {
    // A handler can end the session mid-chunk (a drain completing, destroy() from a listener); the
    // frames after it in the same chunk belong to no one.
    if (this.#state === State.CLOSED) return;
    if (this.#trace) this.#log.trace(describeFrame(type, flags, id, payload.length));
    if (this.#state === State.HANDSHAKE) {
      if (type === FrameType.GO_AWAY) this.#onGoAway(payload);
      else this.#handshake!.onFrame(type, payload);
      return;
    }
    switch (type) {
      case FrameType.DATA:
        this.#onData(flags, id, payload);
        break;
      case FrameType.WINDOW_UPDATE:
        this.#onWindowUpdate(id, payload.readUInt32BE(0));
        break;
      case FrameType.PING:
        this.#onPing(flags, payload);
        break;
      case FrameType.GO_AWAY:
        this.#onGoAway(payload);
        break;
      case FrameType.SYN:
        this.#onSyn(id, payload);
        break;
      case FrameType.ACK:
        this.#onAck(id);
        break;
      case FrameType.RST:
        this.#onRst(id, payload);
        break;
      default:
        throw new ProtocolError(`${describeFrame(type, flags, id, payload.length)} after the handshake`);
    }
  };

  #onData(flags: number, id: number, payload: Buffer): void {
    const stream = this.#streams.get(id);
    if (stream === undefined) return this.#checkClosedStream(id, 'DATA');
    if (stream.remoteFin) throw new ProtocolError(`DATA on stream ${id} after its FIN`);
    const n = payload.length;
    if (n > stream.recvWindow) {
      throw new ProtocolError(
        `stream ${id} sent ${n} bytes beyond its credit of ${stream.recvWindow}`,
        ErrorCode.FLOW_CONTROL_ERROR,
      );
    }
    stream.chargeWindow(n);
    this.#held += n;
    if (this.#held > this.options.sessionBuffer) {
      // Overload is refused per stream: the session and its other streams go on.
      const reason = `session buffer bound of ${this.options.sessionBuffer} bytes reached`;
      this.resetStream(stream, ErrorCode.OVERLOAD, reason);
      stream.destroy(new StreamResetError(ErrorCode.OVERLOAD, reason, false));
      return;
    }
    stream.onData(payload, (flags & Flag.FIN) !== 0);
  }

  #onWindowUpdate(id: number, increment: number): void {
    const stream = this.#streams.get(id);
    if (stream === undefined) return this.#checkClosedStream(id, 'WINDOW_UPDATE');
    if (increment === 0) throw new ProtocolError(`WINDOW_UPDATE of 0 on stream ${id}`);
    if (stream.sendCredit + increment > Limits.MAX_WINDOW) {
      throw new ProtocolError(`stream ${id} credit above 2^31-1`, ErrorCode.FLOW_CONTROL_ERROR);
    }
    stream.onWindowUpdate(increment);
  }

  #onPing(flags: number, payload: Buffer): void {
    if ((flags & Flag.ACK) === 0) {
      if (this.#transport.writableLength < PONG_BACKLOG_LIMIT) this.#write(encodePing(true, payload));
      return;
    }
    const seq = payload.readUInt32BE(4);
    const pending = this.#pings.get(seq);
    if (pending === undefined) return;
    this.#pings.delete(seq);
    this.rttMs = performance.now() - pending.at;
    pending.resolve(this.rttMs);
  }

  #onGoAway(payload: Buffer): void {
    const { code, reason } = decodeCodeReason(payload);
    if (code !== ErrorCode.NO_ERROR) {
      const err = new SessionError(
        codeForWire(code),
        `peer ended the session: ${errorCodeName(code)}${reason ? ` (${reason})` : ''}`,
        code,
      );
      return this.#teardown(err);
    }
    this.#log.info({ reason }, 'peer is draining (GO_AWAY)');
    this.#remoteGoAway = true;
    this.emit('goaway', code, reason);
  }

  #onSyn(id: number, payload: Buffer): void {
    const peerParity = this.role === 'client' ? 0 : 1;
    if ((id & 1) !== peerParity || id <= this.#lastPeerId) {
      throw new ProtocolError(`SYN for stream ${id}: wrong parity or not above ${this.#lastPeerId}`);
    }
    this.#lastPeerId = id;
    const codec = this.#synCodec;
    const meta =
      codec !== null && payload[0]! < COMPACT_BELOW
        ? codec.decode(payload)
        : decodeJsonObject(payload, 'SYN');
    if (this.#localGoAway || this.listenerCount('stream') === 0) {
      this.#write(encodeRst(id, ErrorCode.REFUSED_STREAM, this.#localGoAway ? 'draining' : 'no handler'));
      return;
    }
    if (this.#streams.size >= this.options.maxStreams) {
      this.#write(encodeRst(id, ErrorCode.OVERLOAD, `${this.#streams.size} streams open, the limit`));
      return;
    }
    const stream = new Stream(this, id, meta, this.peerWindow, this.options.window, 'synReceived');
    this.#streams.set(id, stream);
    this.#unacked.add(stream);
    this.#ackTimer ??= setTimeout(this.#onAckDelay, ACK_DELAY_MS).unref();
    this.emit('stream', stream);
  }

  #onAck(id: number): void {
    const stream = this.#streams.get(id);
    if (stream === undefined) return this.#checkClosedStream(id, 'ACK');
    if (stream.accepted) throw new ProtocolError(`ACK for stream ${id}, which is not awaiting one`);
    this.#pendingOpens.delete(id);
    stream.onAck();
  }

  #onRst(id: number, payload: Buffer): void {
    const stream = this.#streams.get(id);
    if (stream === undefined) return this.#checkClosedStream(id, 'RST');
    const { code, reason } = decodeCodeReason(payload);
    this.#forget(stream);
    stream.onReset(code, reason);
  }

  /**
   * The peer drained and closed. It ACKs every SYN it takes before any other frame of that stream, so
   * a stream still without ACK was never processed: it fails as refused, which callers may retry.
   */
  #refuseUnacknowledged(): void {
    for (const stream of this.#streams.list()) {
      if (stream.accepted) continue;
      this.#forget(stream);
      stream.onReset(ErrorCode.REFUSED_STREAM, 'peer closed after GO_AWAY without accepting the stream');
    }
  }

  /** A frame for an id not in the table: fine if the stream existed and closed, else a violation. */
  #checkClosedStream(id: number, what: string): void {
    const peerParity = this.role === 'client' ? 0 : 1;
    const neverOpened = (id & 1) === peerParity ? id > this.#lastPeerId : id >= this.#nextId;
    if (neverOpened) throw new ProtocolError(`${what} for stream ${id}, which was never opened`);
  }

  #opened(result: Established): void {
    this.id = result.id;
    this.peer = result.peer;
    const codec = this.#offeredCodec;
    if (codec !== null && result.peer.caps.includes(codec.cap)) this.#synCodec = codec;
    this.peerWindow = result.peerWindow;
    this.#state = State.OPEN;
    this.#log = this.#log.child({ session: this.id });
    this.#handshake!.stop();
    this.#handshake = null;
    this.#lastRecvAt = Date.now();
    this.#nextPingAt = this.#lastRecvAt + this.options.pingInterval;
    this.#scheduleTick();
    const settle = this.#settle;
    this.#settle = null;
    settle?.resolve(this);
  }

  #scheduleTick(): void {
    const o = this.options;
    let next = Math.min(this.#nextPingAt, this.#lastRecvAt + o.pingTimeout);
    if (this.#stallSince !== 0) next = Math.min(next, this.#stallSince + o.writeTimeout);
    this.#tickTimer = setTimeout(() => this.#tick(), Math.max(10, next - Date.now()));
    this.#tickTimer.unref();
  }

  #tick(): void {
    this.#tickTimer = null;
    if (this.#state !== State.OPEN) return;
    const now = Date.now();
    const o = this.options;
    if (now - this.#lastRecvAt >= o.pingTimeout) {
      const err = new SessionError(
        'SLUICE_ERR_PING_TIMEOUT',
        `no frame from the peer for ${now - this.#lastRecvAt}ms (ping timeout ${o.pingTimeout}ms)`,
        ErrorCode.PING_TIMEOUT,
      );
      return this.#teardown(err);
    }
    if (
      this.#stallSince !== 0 &&
      this.#transport.writableNeedDrain &&
      now - this.#stallSince >= o.writeTimeout
    ) {
      const err = new SessionError(
        'SLUICE_ERR_WRITE_TIMEOUT',
        `transport accepted no output for ${now - this.#stallSince}ms (write timeout ${o.writeTimeout}ms)`,
        ErrorCode.WRITE_TIMEOUT,
      );
      return this.#teardown(err);
    }
    if (now >= this.#nextPingAt) {
      this.#sendPing(null);
      this.#nextPingAt = now + o.pingInterval;
    }
    this.#scheduleTick();
  }

  #sendPing(waiter: { resolve: (rtt: number) => void; reject: (err: Error) => void } | null): void {
    const seq = (this.#pingSeq = (this.#pingSeq + 1) >>> 0);
    const opaque = Buffer.alloc(8);
    opaque.writeUInt32BE(seq, 4);
    this.#pings.set(seq, {
      at: performance.now(),
      resolve: waiter?.resolve ?? noop,
      reject: waiter?.reject ?? noop,
    });
    // The oldest unanswered ping is given up so the map stays bounded.
    if (this.#pings.size > 64) {
      const [oldest, pending] = this.#pings.entries().next().value!;
      this.#pings.delete(oldest);
      // 64 later pings went out and none came back: this one is as good as timed out.
      pending.reject(new SessionError('SLUICE_ERR_PING_TIMEOUT', 'ping dropped: too many unanswered pings'));
    }
    this.#write(encodePing(false, opaque));
  }

  #armOpenTimer(): void {
    if (this.#openTimer !== null || this.#pendingOpens.size === 0) return;
    const deadline = this.#pendingOpens.values().next().value!;
    this.#openTimer = setTimeout(() => this.#onOpenTimer(), Math.max(0, deadline - Date.now()));
    this.#openTimer.unref();
  }

  #onOpenTimer(): void {
    this.#openTimer = null;
    const now = Date.now();
    for (const [id, deadline] of this.#pendingOpens) {
      if (deadline > now) break;
      this.#pendingOpens.delete(id);
      const stream = this.#streams.get(id);
      const message = `no ACK for stream ${id} within ${this.options.openTimeout}ms`;
      stream?.destroy(new SluiceError('SLUICE_ERR_OPEN_TIMEOUT', message, ErrorCode.CANCEL));
    }
    this.#armOpenTimer();
  }

  /** The ACK of a stream the peer opened, written before that stream's first frame (see #onSyn). */
  #ack(stream: Stream): void {
    stream.onAckSent();
    this.#unacked.delete(stream);
    this.#write(encodeAck(stream.id));
  }

  /** ACKs every stream still waiting for one: the delay ran out, or a GO_AWAY is about to go. */
  #flushAcks(): void {
    if (this.#ackTimer !== null) clearTimeout(this.#ackTimer);
    this.#ackTimer = null;
    for (const stream of this.#unacked.list()) {
      stream.onAckSent();
      this.#write(encodeAck(stream.id));
    }
    this.#unacked.clear();
  }

  /**
   * Takes the stream out of the table. It is `closed` already when both FINs passed; otherwise it was
   * reset or refused, and `detach` moves it to `reset`.
   */
  #forget(stream: Stream): void {
    if (this.#streams.get(stream.id) !== stream) return;
    // Reset before it was ACKed: nothing more is sent on it, the ACK included.
    if (stream.ackPending) this.#unacked.delete(stream);
    stream.detach();
    this.#streams.delete(stream.id);
    this.#pendingOpens.delete(stream.id);
    this.#held -= stream.held;
    if (this.#localGoAway) this.#maybeFinishDrain();
  }

  #goAway(reason: string): void {
    if (this.#localGoAway || this.#state !== State.OPEN) return;
    this.#localGoAway = true;
    this.#log.info({ reason, streams: this.#streams.size }, 'draining (GO_AWAY)');
    // Every stream taken so far is ACKed before the GO_AWAY, so that one never ACKed was never taken.
    this.#flushAcks();
    this.#write(encodeGoAway(ErrorCode.NO_ERROR, reason));
  }

  #maybeFinishDrain(): void {
    if (this.#state === State.OPEN && this.#localGoAway && this.#streams.size === 0) this.#teardown(null);
  }

  #onGraceExpired(): void {
    this.#graceTimer = null;
    for (const stream of this.#streams.list()) stream.reset(ErrorCode.CANCEL, 'grace period ended');
    this.#maybeFinishDrain();
  }

  /**
   * The one cleanup path. `goAwayCode` sends GO_AWAY before closing (errors this side detected);
   * without it an error closes the transport at once and a clean close ends it gracefully.
   */
  #teardown(err: Error | null, goAwayCode?: number, reason?: string): void {
    if (this.#state === State.CLOSED) return;
    this.#state = State.CLOSED;
    const timers = [this.#tickTimer, this.#openTimer, this.#graceTimer, this.#ackTimer];
    for (const timer of timers) if (timer !== null) clearTimeout(timer);
    this.#tickTimer = this.#openTimer = this.#graceTimer = this.#ackTimer = null;
    this.#handshake?.stop();
    this.#handshake = null;
    this.#unacked.clear();
    const streams = this.#streams.list();
    this.#streams.clear();
    this.#pendingOpens.clear();
    this.#writers = [];
    this.#held = 0;
    const pingErr = err ?? new SessionError('SLUICE_ERR_SESSION_CLOSED', 'session closed');
    for (const pending of this.#pings.values()) pending.reject(pingErr);
    this.#pings.clear();
    // A local destroy() aborts streams the way stream.destroy() does: closed without 'end', no error.
    for (const stream of streams) stream.onSessionEnd(err);

    const transport = this.#transport;
    // The error listener stays: a transport can still report an error while it closes.
    transport.off('data', this.#onTransportDataBound);
    transport.off('drain', this.#onDrainBound);
    transport.off('end', this.#onEndBound);
    transport.off('close', this.#onCloseBound);
    // Frames of this turn still in the batch go before the end, as the corked ones do.
    this.#flushBatch();
    this.#batch = null;
    if (goAwayCode !== undefined && !transport.destroyed) {
      transport.end(encodeGoAway(goAwayCode, reason ?? err?.message ?? ''));
      lingerThenDestroy(transport);
    } else if (err === null && !transport.destroyed) {
      transport.end();
      lingerThenDestroy(transport);
    } else {
      transport.destroy();
    }
    if (err !== null) this.#log.info({ code: (err as SluiceError).code, err: err.message }, 'session closed');
    else this.#log.debug('session closed');

    const settle = this.#settle;
    this.#settle = null;
    settle?.reject(
      err ?? new SessionError('SLUICE_ERR_SESSION_CLOSED', 'session closed during the handshake'),
    );
    this.#resolveClosed();
    process.nextTick(() => this.emit('close', err ?? undefined));
  }
}

function uncork(session: Session, transport: Duplex): void {
  session.uncorked();
  transport.uncork();
}

function noop(): void {}

function lingerThenDestroy(transport: Duplex): void {
  setTimeout(() => transport.destroy(), END_LINGER_MS).unref();
}
