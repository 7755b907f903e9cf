// The pure, incremental codec of docs/protocol.md §2–3. No I/O: the decoder takes chunks as they
// come and calls back with whole frames, keeping any partial tail for the next chunk.
import { ProtocolError } from '../errors.js';
import { ErrorCode, Flag, FrameType, HEADER_SIZE, Limits, PROTOCOL_VERSION } from './constants.js';

/**
 * Called once per decoded frame. DATA payloads are delivered in the pieces in which they arrived,
 * so a long DATA frame may produce several calls; only the last carries FIN. Every other payload is
 * delivered whole. Payloads are views into the chunks given to `push()`: no byte is copied.
 */
export type FrameHandler = (type: number, flags: number, streamId: number, payload: Buffer) => void;

interface Bounds {
  readonly min: number;
  readonly max: number;
  readonly flags: number;
  readonly session: boolean;
}

const REASON_FRAME = { min: 4, max: 4 + Limits.MAX_REASON_BYTES };
const JSON_HANDSHAKE = { min: 2, max: Limits.MAX_HANDSHAKE_PAYLOAD, flags: 0, session: true };

// Keyed by frame type: the payload bounds, allowed flags and whether the stream id must be 0 (§3).
const BOUNDS: Readonly<Record<FrameType, Bounds>> = {
  [FrameType.DATA]: { min: 0, max: Limits.MAX_DATA_PAYLOAD, flags: Flag.FIN, session: false },
  [FrameType.WINDOW_UPDATE]: { min: 4, max: 4, flags: 0, session: false },
  [FrameType.PING]: { min: 8, max: 8, flags: Flag.ACK, session: true },
  [FrameType.GO_AWAY]: { ...REASON_FRAME, flags: 0, session: true },
  [FrameType.SYN]: { min: 2, max: Limits.MAX_SYN_PAYLOAD, flags: 0, session: false },
  [FrameType.ACK]: { min: 0, max: 0, flags: 0, session: false },
  [FrameType.RST]: { ...REASON_FRAME, flags: 0, session: false },
  [FrameType.HELLO]: JSON_HANDSHAKE,
  [FrameType.WELCOME]: JSON_HANDSHAKE,
};

/** The bounds of a frame type, or undefined for a type docs/protocol.md does not define. */
function boundsOf(type: number): Bounds | undefined {
  return (BOUNDS as Readonly<Record<number, Bounds | undefined>>)[type];
}

const EMPTY = Buffer.alloc(0);

export class FrameDecoder {
  readonly #onFrame: FrameHandler;
  readonly #header = Buffer.allocUnsafe(HEADER_SIZE);
  #headerFill = 0;
  #inPayload = false;
  #type = 0;
  #flags = 0;
  #streamId = 0;
  #remaining = 0;
  // A control payload split across chunks is assembled here; its size is bounded by BOUNDS.
  #control: Buffer | null = null;
  #controlFill = 0;
  #failed: ProtocolError | null = null;

  constructor(onFrame: FrameHandler) {
    this.#onFrame = onFrame;
  }

  /** Feeds bytes. Throws a ProtocolError on the first violation, and again on every later call. */
  push(chunk: Buffer): void {
    if (this.#failed !== null) throw this.#failed;
    try {
      this.#consume(chunk);
    } catch (err) {
      if (err instanceof ProtocolError) this.#failed = err;
      throw err;
    }
  }

  /** True when no partial frame is held: the input so far ended on a frame boundary. */
  get idle(): boolean {
    return !this.#inPayload && this.#headerFill === 0;
  }

  #consume(chunk: Buffer): void {
    const end = chunk.length;
    let off = 0;
    while (off < end) {
      if (!this.#inPayload) {
        if (this.#headerFill === 0 && end - off >= HEADER_SIZE) {
          this.#parseHeader(chunk, off);
          off += HEADER_SIZE;
        } else {
          const take = Math.min(HEADER_SIZE - this.#headerFill, end - off);
          chunk.copy(this.#header, this.#headerFill, off, off + take);
          this.#headerFill += take;
          off += take;
          if (this.#headerFill < HEADER_SIZE) return;
          this.#headerFill = 0;
          this.#parseHeader(this.#header, 0);
        }
        if (this.#remaining === 0) {
          this.#onFrame(this.#type, this.#flags, this.#streamId, EMPTY);
        } else {
          this.#inPayload = true;
        }
        continue;
      }

      const take = Math.min(this.#remaining, end - off);
      if (this.#type === FrameType.DATA) {
        this.#remaining -= take;
        const done = this.#remaining === 0;
        if (done) this.#inPayload = false;
        const flags = done ? this.#flags : this.#flags & ~Flag.FIN;
        this.#onFrame(FrameType.DATA, flags, this.#streamId, chunk.subarray(off, off + take));
        off += take;
      } else if (this.#control === null && take === this.#remaining) {
        this.#remaining = 0;
        this.#inPayload = false;
        this.#onFrame(this.#type, this.#flags, this.#streamId, chunk.subarray(off, off + take));
        off += take;
      } else {
        this.#control ??= Buffer.allocUnsafe(this.#controlFill + this.#remaining);
        chunk.copy(this.#control, this.#controlFill, off, off + take);
        this.#controlFill += take;
        this.#remaining -= take;
        off += take;
        if (this.#remaining === 0) {
          const payload = this.#control;
          this.#control = null;
          this.#controlFill = 0;
          this.#inPayload = false;
          this.#onFrame(this.#type, this.#flags, this.#streamId, payload);
        }
      }
    }
  }

  #parseHeader(buf: Buffer, off: number): void {
    const version = buf[off]!;
    const type = buf[off + 1]!;
    const flags = buf.readUInt16BE(off + 2);
    const streamId = buf.readUInt32BE(off + 4);
    const length = buf.readUInt32BE(off + 8);
    // A GO_AWAY of any version is read so that a version mismatch can be reported (§7).
    if (version !== PROTOCOL_VERSION && type !== FrameType.GO_AWAY) {
      throw new ProtocolError(
        `peer sent tunnel protocol v${version}, this side speaks v${PROTOCOL_VERSION}: upgrade the older side`,
        ErrorCode.VERSION_MISMATCH,
      );
    }
    const bounds = boundsOf(type);
    if (bounds === undefined) throw new ProtocolError(`unknown frame type 0x${type.toString(16)}`);
    if ((flags & ~bounds.flags) !== 0) {
      throw new ProtocolError(
        `frame type 0x${type.toString(16)} with undefined flags 0x${flags.toString(16)}`,
      );
    }
    if (bounds.session !== (streamId === 0)) {
      throw new ProtocolError(
        `frame type 0x${type.toString(16)} on ${streamId === 0 ? 'stream 0' : `stream ${streamId}`}`,
      );
    }
    if (length < bounds.min || length > bounds.max) {
      throw new ProtocolError(
        `frame type 0x${type.toString(16)} with length ${length} outside ${bounds.min}..${bounds.max}`,
        ErrorCode.FRAME_SIZE_ERROR,
      );
    }
    this.#type = type;
    this.#flags = flags;
    this.#streamId = streamId;
    this.#remaining = length;
  }
}

export function writeHeader(
  buf: Buffer,
  off: number,
  type: number,
  flags: number,
  streamId: number,
  length: number,
): void {
  buf[off] = PROTOCOL_VERSION;
  buf[off + 1] = type;
  buf.writeUInt16BE(flags, off + 2);
  buf.writeUInt32BE(streamId, off + 4);
  buf.writeUInt32BE(length, off + 8);
}

export function encodeHeader(type: number, flags: number, streamId: number, length: number): Buffer {
  const buf = Buffer.allocUnsafe(HEADER_SIZE);
  writeHeader(buf, 0, type, flags, streamId, length);
  return buf;
}

/** Header and payload in one buffer, for control frames. */
export function encodeFrame(type: number, flags: number, streamId: number, payload: Buffer = EMPTY): Buffer {
  const buf = Buffer.allocUnsafe(HEADER_SIZE + payload.length);
  writeHeader(buf, 0, type, flags, streamId, payload.length);
  payload.copy(buf, HEADER_SIZE);
  return buf;
}

export function encodeWindowUpdate(streamId: number, increment: number): Buffer {
  const buf = Buffer.allocUnsafe(HEADER_SIZE + 4);
  writeHeader(buf, 0, FrameType.WINDOW_UPDATE, 0, streamId, 4);
  buf.writeUInt32BE(increment, HEADER_SIZE);
  return buf;
}

export function encodePing(ack: boolean, opaque: Buffer): Buffer {
  return encodeFrame(FrameType.PING, ack ? Flag.ACK : 0, 0, opaque);
}

// Moves the cut back to a character boundary: a reason cut inside a multi-byte character would no
// longer be the valid UTF-8 that §3 requires.
function truncateUtf8(text: Buffer, max: number): Buffer {
  if (text.length <= max) return text;
  let end = max;
  while (end > 0 && (text[end]! & 0xc0) === 0x80) end--;
  return text.subarray(0, end);
}

function encodeCodeReason(type: number, streamId: number, code: number, reason: string): Buffer {
  const text = truncateUtf8(Buffer.from(reason, 'utf8'), Limits.MAX_REASON_BYTES);
  const buf = Buffer.allocUnsafe(HEADER_SIZE + 4 + text.length);
  writeHeader(buf, 0, type, 0, streamId, 4 + text.length);
  buf.writeUInt32BE(code, HEADER_SIZE);
  text.copy(buf, HEADER_SIZE + 4);
  return buf;
}

export function encodeGoAway(code: number, reason = ''): Buffer {
  return encodeCodeReason(FrameType.GO_AWAY, 0, code, reason);
}

export function encodeRst(streamId: number, code: number, reason = ''): Buffer {
  return encodeCodeReason(FrameType.RST, streamId, code, reason);
}

export function encodeAck(streamId: number): Buffer {
  return encodeFrame(FrameType.ACK, 0, streamId);
}

/** SYN with a payload its session's SynCodec made. Throws a RangeError if it is too large to send. */
export function encodeSynFrame(streamId: number, payload: Buffer): Buffer {
  if (payload.length > Limits.MAX_SYN_PAYLOAD) {
    throw new RangeError(`SYN payload of ${payload.length} bytes exceeds ${Limits.MAX_SYN_PAYLOAD}`);
  }
  return encodeFrame(FrameType.SYN, 0, streamId, payload);
}

/** SYN, HELLO or WELCOME with a JSON object payload. Throws a RangeError if it is too large to send. */
export function encodeJsonFrame(type: number, streamId: number, value: object): Buffer {
  const payload = Buffer.from(JSON.stringify(value), 'utf8');
  const bounds = boundsOf(type)!;
  if (payload.length > bounds.max) {
    throw new RangeError(`${frameTypeName(type)} payload of ${payload.length} bytes exceeds ${bounds.max}`);
  }
  return encodeFrame(type, 0, streamId, payload);
}

export function decodeCodeReason(payload: Buffer): { code: number; reason: string } {
  return { code: payload.readUInt32BE(0), reason: payload.toString('utf8', 4) };
}

/** Parses a SYN, HELLO or WELCOME payload; anything but a JSON object is a protocol error. */
export function decodeJsonObject(payload: Buffer, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new ProtocolError(`${what} payload is not valid JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ProtocolError(`${what} payload is not a JSON object`);
  }
  return value as Record<string, unknown>;
}

export function frameTypeName(type: number): string {
  const names = ['DATA', 'WINDOW_UPDATE', 'PING', 'GO_AWAY', 'SYN', 'ACK', 'RST', 'HELLO', 'WELCOME'];
  return names[type] ?? `0x${type.toString(16)}`;
}

/** One line for trace logs, e.g. `DATA stream=3 len=65536 flags=FIN`. */
export function describeFrame(type: number, flags: number, streamId: number, length: number): string {
  const named: string[] = [];
  if (flags & Flag.FIN) named.push('FIN');
  if (flags & Flag.ACK) named.push('ACK');
  return `${frameTypeName(type)} stream=${streamId} len=${length}${named.length ? ` flags=${named.join('|')}` : ''}`;
}
