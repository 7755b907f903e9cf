// Decodes bytes into whole frames for codec tests. The decoder delivers a DATA payload in the pieces
// in which it arrived; FrameCollector joins them back per frame, using `decoder.idle` in the
// callback to tell the last piece of a frame (nothing partial held) from an earlier one.
import assert from 'node:assert/strict';
import { FrameDecoder } from '../../src/protocol/codec.js';
import { Flag, FrameType } from '../../src/protocol/constants.js';

export interface Frame {
  readonly type: number;
  readonly flags: number;
  readonly streamId: number;
  readonly payload: Buffer;
}

export class FrameCollector {
  readonly frames: Frame[] = [];
  /** Pieces of a DATA frame whose last byte has not arrived yet. */
  readonly pending: Buffer[] = [];
  /** Every payload as delivered, before joining. */
  readonly deliveries: Buffer[] = [];
  readonly decoder: FrameDecoder;

  constructor() {
    this.decoder = new FrameDecoder((type, flags, streamId, payload) => {
      this.deliveries.push(payload);
      if (type !== FrameType.DATA) {
        assert.equal(this.pending.length, 0, 'a control frame arrived inside a DATA frame');
        this.frames.push({ type, flags, streamId, payload });
        return;
      }
      this.pending.push(payload);
      if (!this.decoder.idle) {
        assert.equal(flags & Flag.FIN, 0, 'FIN on a piece that is not the last of its frame');
        assert.ok(payload.length > 0, 'an empty piece of a DATA frame');
        return;
      }
      this.frames.push({ type, flags, streamId, payload: join(this.pending.splice(0)) });
    });
  }

  push(chunk: Buffer): this {
    this.decoder.push(chunk);
    return this;
  }

  pushAll(chunks: Iterable<Buffer>): this {
    for (const chunk of chunks) this.push(chunk);
    return this;
  }
}

export function decodeAll(chunks: Iterable<Buffer>): FrameCollector {
  return new FrameCollector().pushAll(chunks);
}

/**
 * Joins the pieces of one payload. Pieces that are adjacent views of one ArrayBuffer (the usual
 * case, since the decoder does not copy DATA) join without copying, which keeps the every-offset
 * split tests fast.
 */
export function join(pieces: readonly Buffer[]): Buffer {
  const first = pieces[0];
  if (first === undefined) return Buffer.alloc(0);
  let end = first.byteOffset + first.length;
  for (const piece of pieces.slice(1)) {
    if (piece.buffer !== first.buffer || piece.byteOffset !== end) return Buffer.concat(pieces);
    end += piece.length;
  }
  return Buffer.from(first.buffer, first.byteOffset, end - first.byteOffset);
}

/** Byte equality, with a shortcut when both views cover the same memory. */
export function sameBytes(a: Buffer, b: Buffer): boolean {
  if (a.length !== b.length) return false;
  if (a.buffer === b.buffer && a.byteOffset === b.byteOffset) return true;
  return a.equals(b);
}

/** The first difference between two frame lists, or null when they are equal. */
export function frameDiff(actual: readonly Frame[], expected: readonly Frame[]): string | null {
  const count = Math.max(actual.length, expected.length);
  for (let i = 0; i < count; i++) {
    const a = actual[i];
    const e = expected[i];
    if (a === undefined || e === undefined) {
      return `frame ${i}: got ${a ? show(a) : 'nothing'}, expected ${e ? show(e) : 'nothing'}`;
    }
    const same =
      a.type === e.type &&
      a.flags === e.flags &&
      a.streamId === e.streamId &&
      sameBytes(a.payload, e.payload);
    if (!same) return `frame ${i}: got ${show(a)}, expected ${show(e)}`;
  }
  return null;
}

export function assertFrames(actual: readonly Frame[], expected: readonly Frame[], context = ''): void {
  const diff = frameDiff(actual, expected);
  if (diff !== null) assert.fail(context ? `${context}: ${diff}` : diff);
}

function show(frame: Frame): string {
  const head = frame.payload.subarray(0, 16).toString('hex');
  return `{type ${frame.type} flags ${frame.flags} stream ${frame.streamId} len ${frame.payload.length} ${head}}`;
}

/** Views of `input` cut at the given offsets (sorted, within bounds). No byte is copied. */
export function splitAt(input: Buffer, offsets: readonly number[]): Buffer[] {
  const chunks: Buffer[] = [];
  let start = 0;
  for (const offset of offsets) {
    chunks.push(input.subarray(start, offset));
    start = offset;
  }
  chunks.push(input.subarray(start));
  return chunks;
}

/** Views of `input` whose sizes cycle through `sizes` (each at least 1). */
export function chunked(input: Buffer, sizes: readonly number[]): Buffer[] {
  const chunks: Buffer[] = [];
  let off = 0;
  for (let i = 0; off < input.length; i++) {
    const size = Math.max(1, sizes[i % sizes.length]!);
    chunks.push(input.subarray(off, off + size));
    off += size;
  }
  return chunks;
}
