// The record codec of docs/http-over-streams.md. Pure and incremental, like the frame codec of
// src/protocol/codec.ts: the decoder takes a tunnel stream's bytes in whatever chunks they come,
// keeps the partial tail, and enforces the order of records for its direction.
import { SluiceError } from '../errors.js';
import { ErrorCode } from '../protocol/constants.js';

export const RecordKind = { HEAD: 0x1, BODY: 0x2, TRAILERS: 0x3, COMPACT_HEAD: 0x4 } as const;
export type RecordKind = (typeof RecordKind)[keyof typeof RecordKind];

export const RECORD_HEADER_SIZE = 5;
export const MAX_HEAD_PAYLOAD = 64 * 1024;
export const MAX_BODY_PAYLOAD = 16 * 1024 * 1024;

// The smallest JSON payload either kind can hold is two bytes: `[]` for TRAILERS; a HEAD is longer.
const MIN_JSON_PAYLOAD = 2;
// A compact HEAD: status, string count and the status text's length, at least.
const MIN_COMPACT_HEAD = 6;
const MAX_U16 = 0xffff;
// Any character past U+00FF; written from U+0100 up so that the pattern names no control byte.
const NOT_A_BYTE = /[\u0100-\uffff]/;

export interface ResponseHead {
  status: number;
  statusText?: string;
  /** Flat raw list: name, value, name, value, … */
  headers: string[];
}

export type Direction = 'request' | 'response';

export interface EnvelopeHandlers {
  /** Every HEAD, interim (1xx) and final, in order. Required in the response direction. */
  onHead?(head: ResponseHead): void;
  /** Body bytes, as views into the pushed chunks; one BODY record may arrive in several pieces. */
  onBody(piece: Buffer): void;
  onTrailers(raw: string[]): void;
  /** Bytes after a `101` HEAD, or all bytes with `raw: true`. Without it, a `101` is an error. */
  onRaw?(piece: Buffer): void;
}

export interface EnvelopeOptions {
  /** The request direction of `kind: "upgrade"`: raw bytes from the first byte, no records. */
  raw?: boolean;
}

/** The peer broke docs/http-over-streams.md. The receiver resets the stream with PROTOCOL_ERROR. */
export class EnvelopeError extends SluiceError {
  constructor(message: string) {
    super('SLUICE_ERR_PROTOCOL', message, ErrorCode.PROTOCOL_ERROR);
    this.name = 'EnvelopeError';
  }
}

// Where the decoder is in the record order of its direction.
const Phase = {
  /** Response direction: before the final HEAD, only HEAD may come. */
  Interim: 0,
  /** After the final HEAD (or from the start, request direction): BODY*, then optional TRAILERS. */
  Body: 1,
  /** After TRAILERS: nothing may come. */
  Done: 2,
  /** After a `101`, or `raw: true`: bytes are not records. */
  Raw: 3,
} as const;
type Phase = (typeof Phase)[keyof typeof Phase];

const utf8 = new TextDecoder('utf-8', { fatal: true });

export class EnvelopeDecoder {
  readonly #direction: Direction;
  readonly #handlers: EnvelopeHandlers;
  readonly #header = Buffer.allocUnsafe(RECORD_HEADER_SIZE);
  #headerFill = 0;
  #inPayload = false;
  #kind = 0;
  #remaining = 0;
  // A HEAD or TRAILERS payload split across chunks is assembled here; bounded by MAX_HEAD_PAYLOAD.
  #json: Buffer | null = null;
  #jsonFill = 0;
  #phase: Phase;
  #failed: EnvelopeError | null = null;

  constructor(direction: Direction, handlers: EnvelopeHandlers, options: EnvelopeOptions = {}) {
    if (direction === 'response' && handlers.onHead === undefined) {
      throw new TypeError('the response direction needs an onHead handler');
    }
    if (options.raw === true && (direction !== 'request' || handlers.onRaw === undefined)) {
      throw new TypeError('raw: true is for the request direction only and needs an onRaw handler');
    }
    this.#direction = direction;
    this.#handlers = handlers;
    this.#phase = options.raw === true ? Phase.Raw : direction === 'response' ? Phase.Interim : Phase.Body;
  }

  /** Feeds bytes. Throws an EnvelopeError on the first violation, and again on every later call. */
  push(chunk: Buffer): void {
    if (this.#failed !== null) throw this.#failed;
    try {
      this.#consume(chunk);
    } catch (err) {
      if (err instanceof EnvelopeError) this.#failed = err;
      throw err;
    }
  }

  /** The peer sent FIN. Throws an EnvelopeError if it cut a record or never sent a final HEAD. */
  finish(): void {
    if (this.#failed !== null) throw this.#failed;
    let problem: string | null = null;
    if (!this.idle) {
      problem = this.#inPayload
        ? `FIN inside a record of kind 0x${this.#kind.toString(16)} with ${this.#remaining} bytes missing`
        : `FIN inside a record header (${this.#headerFill} of ${RECORD_HEADER_SIZE} bytes)`;
    } else if (this.#phase === Phase.Interim) {
      problem = 'FIN before the final HEAD';
    }
    if (problem !== null) {
      this.#failed = new EnvelopeError(problem);
      throw this.#failed;
    }
  }

  /** True when no partial record is held: the input so far ended on a record boundary. */
  get idle(): boolean {
    return !this.#inPayload && this.#headerFill === 0;
  }

  /** True once bytes are no longer records: after a `101` HEAD, or from the start with `raw: true`. */
  get raw(): boolean {
    return this.#phase === Phase.Raw;
  }

  #consume(chunk: Buffer): void {
    const end = chunk.length;
    let off = 0;
    while (off < end) {
      if (this.#phase === Phase.Raw) {
        this.#handlers.onRaw!(off === 0 ? chunk : chunk.subarray(off));
        return;
      }
      if (!this.#inPayload) {
        if (this.#headerFill === 0 && end - off >= RECORD_HEADER_SIZE) {
          this.#parseHeader(chunk, off);
          off += RECORD_HEADER_SIZE;
        } else {
          const take = Math.min(RECORD_HEADER_SIZE - this.#headerFill, end - off);
          chunk.copy(this.#header, this.#headerFill, off, off + take);
          this.#headerFill += take;
          off += take;
          if (this.#headerFill < RECORD_HEADER_SIZE) return;
          this.#headerFill = 0;
          this.#parseHeader(this.#header, 0);
        }
        // Every kind has a minimum length of at least 1, so a payload always follows.
        this.#inPayload = true;
        continue;
      }

      const take = Math.min(this.#remaining, end - off);
      const piece = chunk.subarray(off, off + take);
      off += take;
      this.#remaining -= take;
      if (this.#kind === RecordKind.BODY) {
        if (this.#remaining === 0) this.#inPayload = false;
        this.#handlers.onBody(piece);
      } else if (this.#json === null && this.#remaining === 0) {
        this.#inPayload = false;
        this.#completeJson(piece);
      } else {
        this.#json ??= Buffer.allocUnsafe(take + this.#remaining);
        piece.copy(this.#json, this.#jsonFill);
        this.#jsonFill += take;
        if (this.#remaining === 0) {
          const payload = this.#json;
          this.#json = null;
          this.#jsonFill = 0;
          this.#inPayload = false;
          this.#completeJson(payload);
        }
      }
    }
  }

  // Checks kind, length and order as soon as the header is whole, before any payload is buffered.
  #parseHeader(buf: Buffer, off: number): void {
    const kind = buf[off]!;
    const length = buf.readUInt32BE(off + 1);
    const [min, max] =
      kind === RecordKind.BODY
        ? [1, MAX_BODY_PAYLOAD]
        : kind === RecordKind.HEAD || kind === RecordKind.TRAILERS
          ? [MIN_JSON_PAYLOAD, MAX_HEAD_PAYLOAD]
          : kind === RecordKind.COMPACT_HEAD
            ? [MIN_COMPACT_HEAD, MAX_HEAD_PAYLOAD]
            : [-1, -1];
    if (min === -1) throw new EnvelopeError(`unknown record kind 0x${kind.toString(16)}`);
    if (length < min || length > max) {
      throw new EnvelopeError(`${recordKindName(kind)} record with length ${length} outside ${min}..${max}`);
    }
    this.#checkOrder(kind);
    this.#kind = kind;
    this.#remaining = length;
  }

  #checkOrder(record: number): void {
    const name = recordKindName(record);
    // A compact HEAD is a HEAD in every rule of order.
    const kind = record === RecordKind.COMPACT_HEAD ? RecordKind.HEAD : record;
    if (kind === RecordKind.HEAD && this.#direction === 'request') {
      throw new EnvelopeError(`${name} record in the request direction`);
    }
    if (this.#phase === Phase.Done) throw new EnvelopeError(`${name} record after TRAILERS`);
    if (kind === RecordKind.HEAD && this.#phase === Phase.Body) {
      throw new EnvelopeError(`${name} record after the final HEAD`);
    }
    if (kind !== RecordKind.HEAD && this.#phase === Phase.Interim) {
      throw new EnvelopeError(`${name} record before the final HEAD`);
    }
  }

  #completeJson(payload: Buffer): void {
    if (this.#kind === RecordKind.COMPACT_HEAD) return this.#completeHead(decodeCompactHead(payload));
    const value = parseJson(payload, recordKindName(this.#kind));
    if (this.#kind === RecordKind.TRAILERS) {
      const raw = validateRawList(value, 'TRAILERS payload');
      this.#phase = Phase.Done;
      this.#handlers.onTrailers(raw);
      return;
    }
    this.#completeHead(validateHead(value));
  }

  #completeHead(head: ResponseHead): void {
    if (head.status === 101) {
      if (this.#handlers.onRaw === undefined)
        throw new EnvelopeError('HEAD 101 on an exchange that is not an upgrade');
      this.#phase = Phase.Raw;
    } else if (head.status >= 200) {
      this.#phase = Phase.Body;
    }
    this.#handlers.onHead!(head);
  }
}

function parseJson(payload: Buffer, what: string): unknown {
  try {
    return JSON.parse(utf8.decode(payload));
  } catch {
    throw new EnvelopeError(`${what} payload is not valid UTF-8 JSON`);
  }
}

/**
 * A raw header list as Node keeps it (`rawHeaders`: name, value, name, value, ...): an even-length
 * array of strings, of at most `maxFields` fields.
 */
export function isRawList(value: unknown, maxFields = Infinity): value is string[] {
  if (!Array.isArray(value) || value.length % 2 !== 0 || value.length > 2 * maxFields) return false;
  for (const item of value) if (typeof item !== 'string') return false;
  return true;
}

function validateRawList(value: unknown, what: string): string[] {
  if (!isRawList(value)) throw new EnvelopeError(`${what} is not an array of name, value strings`);
  return value;
}

function isStatus(value: unknown): value is number {
  return Number.isInteger(value) && (value as number) >= 100 && (value as number) <= 999;
}

function validateHead(value: unknown): ResponseHead {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new EnvelopeError('HEAD payload is not a JSON object');
  }
  const { status, statusText, headers } = value as Record<string, unknown>;
  if (!isStatus(status)) throw new EnvelopeError('HEAD status is not an integer in 100..999');
  if (statusText !== undefined && typeof statusText !== 'string') {
    throw new EnvelopeError('HEAD statusText is not a string');
  }
  const head: ResponseHead = { status, headers: validateRawList(headers, 'HEAD headers') };
  if (statusText !== undefined) head.statusText = statusText;
  return head;
}

export function recordKindName(kind: number): string {
  const names = ['', 'HEAD', 'BODY', 'TRAILERS', 'COMPACT_HEAD'];
  return names[kind] || `0x${kind.toString(16)}`;
}

function writeRecordHeader(buf: Buffer, kind: number, length: number): void {
  buf[0] = kind;
  buf.writeUInt32BE(length, 1);
}

function encodeJsonRecord(kind: number, value: unknown): Buffer {
  const json = JSON.stringify(value);
  const length = Buffer.byteLength(json, 'utf8');
  if (length > MAX_HEAD_PAYLOAD) {
    throw new RangeError(`${recordKindName(kind)} payload of ${length} bytes exceeds ${MAX_HEAD_PAYLOAD}`);
  }
  const buf = Buffer.allocUnsafe(RECORD_HEADER_SIZE + length);
  writeRecordHeader(buf, kind, length);
  buf.write(json, RECORD_HEADER_SIZE, 'utf8');
  return buf;
}

/** A HEAD record, header and JSON in one buffer. Throws a RangeError for what a decoder would refuse. */
export function encodeHead(head: ResponseHead): Buffer {
  if (!isStatus(head.status))
    throw new RangeError(`HEAD status ${head.status} is not an integer in 100..999`);
  if (!isRawList(head.headers)) throw new RangeError('HEAD headers must be an even-length array of strings');
  const value: ResponseHead = { status: head.status, headers: head.headers };
  if (head.statusText !== undefined) value.statusText = head.statusText;
  return encodeJsonRecord(RecordKind.HEAD, value);
}

/**
 * A compact HEAD record (docs/http-over-streams.md, "Compact forms"), for an opener that asked for it
 * (compact.ts): the status, then the status text and the header list as a table of 16-bit lengths
 * and their bytes end to end. No JSON on either side, and undici's raw header buffers are copied as
 * they are, never made strings. `fields` are Buffers, or byte strings (Latin-1, as Node's rawHeaders
 * hold them); `statusText` is a byte string too. Throws a RangeError for what a decoder would refuse.
 */
export function encodeCompactHead(
  status: number,
  statusText: string,
  fields: readonly Buffer[] | readonly string[],
): Buffer {
  if (!isStatus(status)) throw new RangeError(`HEAD status ${status} is not an integer in 100..999`);
  const n = 1 + fields.length;
  if (fields.length % 2 !== 0 || n > MAX_U16) {
    throw new RangeError('HEAD headers must be an even-length list of at most 65,534 items');
  }
  const table = 4 + 2 * n;
  let text = statusText;
  let bytes = statusText.length;
  const strings = typeof fields[0] === 'string';
  if (strings) {
    text += (fields as readonly string[]).join('');
    bytes = text.length;
  } else {
    for (let i = 0; i < fields.length; i++) bytes += (fields[i] as Buffer).length;
  }
  // A character above U+00FF is no byte (undici gives U+FFFD for a reason phrase that is not UTF-8):
  // Latin-1 would keep its low byte, a byte the target never sent. JSON carries it as it is, and the
  // controller then judges it as before (it sends the status's standard reason instead).
  if (NOT_A_BYTE.test(text)) {
    const headers = strings ? (fields as string[]) : (fields as Buffer[]).map((b) => b.toString('latin1'));
    return encodeHead({ status, statusText, headers });
  }
  const length = table + bytes;
  if (length > MAX_HEAD_PAYLOAD) {
    throw new RangeError(`COMPACT_HEAD payload of ${length} bytes exceeds ${MAX_HEAD_PAYLOAD}`);
  }
  const buf = Buffer.allocUnsafe(RECORD_HEADER_SIZE + length);
  writeRecordHeader(buf, RecordKind.COMPACT_HEAD, length);
  let off = RECORD_HEADER_SIZE;
  buf[off] = status >>> 8;
  buf[off + 1] = status & 0xff;
  buf[off + 2] = n >>> 8;
  buf[off + 3] = n & 0xff;
  off += 4;
  if (!putLength(buf, off, statusText.length)) throw tooLong();
  off += 2;
  for (let i = 0; i < fields.length; i++, off += 2) {
    if (!putLength(buf, off, fields[i]!.length)) throw tooLong();
  }
  if (strings) {
    buf.write(text, off, 'latin1');
  } else {
    off += buf.write(statusText, off, 'latin1');
    for (let i = 0; i < fields.length; i++) {
      const b = fields[i] as Buffer;
      buf.set(b, off);
      off += b.length;
    }
  }
  return buf;
}

function putLength(buf: Buffer, off: number, length: number): boolean {
  if (length > MAX_U16) return false;
  buf[off] = length >>> 8;
  buf[off + 1] = length & 0xff;
  return true;
}

function tooLong(): RangeError {
  return new RangeError('a HEAD status text, name or value is longer than 65,535 bytes');
}

function decodeCompactHead(payload: Buffer): ResponseHead {
  const status = (payload[0]! << 8) | payload[1]!;
  if (!isStatus(status)) throw new EnvelopeError('COMPACT_HEAD status is not an integer in 100..999');
  const n = (payload[2]! << 8) | payload[3]!;
  const table = 4 + 2 * n;
  if (n === 0 || n % 2 !== 1 || table > payload.length) {
    throw new EnvelopeError(`COMPACT_HEAD with ${n} strings in ${payload.length} bytes`);
  }
  // Latin-1: one character per byte, so the lengths index the decoded string as they index the bytes.
  const text = payload.toString('latin1', table);
  let at = 0;
  let end = 0;
  let statusText = '';
  const headers = new Array<string>(n - 1);
  for (let i = 0, off = 4; i < n; i++, off += 2) {
    end = at + ((payload[off]! << 8) | payload[off + 1]!);
    if (end > text.length) break;
    if (i === 0) statusText = text.slice(at, end);
    else headers[i - 1] = text.slice(at, end);
    at = end;
  }
  if (end !== text.length || at !== end) {
    throw new EnvelopeError('COMPACT_HEAD whose lengths do not match its bytes');
  }
  return { status, statusText, headers };
}

/** The 5-byte header of a BODY record, so a caller writes it and then the payload without a copy. */
export function encodeBodyHeader(length: number): Buffer {
  if (!Number.isInteger(length) || length < 1 || length > MAX_BODY_PAYLOAD) {
    throw new RangeError(`BODY length ${length} outside 1..${MAX_BODY_PAYLOAD}`);
  }
  const buf = Buffer.allocUnsafe(RECORD_HEADER_SIZE);
  writeRecordHeader(buf, RecordKind.BODY, length);
  return buf;
}

/** A TRAILERS record from the flat raw trailer list. Throws a RangeError if the decoder would refuse it. */
export function encodeTrailers(raw: string[]): Buffer {
  if (!isRawList(raw)) throw new RangeError('trailers must be an even-length array of strings');
  return encodeJsonRecord(RecordKind.TRAILERS, raw);
}
