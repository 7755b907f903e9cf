// Property tests of the decoder (fast-check, fixed seeds): whatever bytes arrive, in whatever
// chunks, it yields frames or throws a ProtocolError, and it never allocates by a peer's say-so.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { ProtocolError } from '../../src/errors.js';
import {
  encodeAck,
  encodeFrame,
  encodeGoAway,
  encodeHeader,
  encodeJsonFrame,
  encodePing,
  encodeRst,
  encodeWindowUpdate,
} from '../../src/protocol/codec.js';
import { Flag, FrameType, HEADER_SIZE, Limits } from '../../src/protocol/constants.js';
import { assertFrames, chunked, type Frame, FrameCollector, join } from '../helpers/frames.js';

const MAX_CONTROL_PAYLOAD = 64 * 1024;

// Chunk sizes, cycled over the input: mostly small, so headers and payloads split often.
const chunkSizes = fc.array(fc.oneof(fc.integer({ min: 1, max: 16 }), fc.integer({ min: 1, max: 4096 })), {
  minLength: 1,
  maxLength: 8,
});

// Lengths at and around every bound of §3, and small ones.
const lengths = fc.oneof(
  fc.integer({ min: 0, max: 64 }),
  fc.constantFrom(1027, 1028, 1029, 16383, 16384, 16385, 65535, 65536, 65537),
  fc.constantFrom(Limits.MAX_DATA_PAYLOAD, Limits.MAX_DATA_PAYLOAD + 1, 0xffffffff),
);

// A header that often gets past the version check, so fuzzing reaches the deeper states.
const plausibleHeader = fc
  .record({
    version: fc.constantFrom(1, 1, 1, 0, 2),
    type: fc.integer({ min: 0, max: 10 }),
    flags: fc.oneof(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 0xffff })),
    streamId: fc.oneof(fc.constantFrom(0, 1, 2), fc.nat()),
    length: lengths,
  })
  .map(({ version, type, flags, streamId, length }) => {
    const header = encodeHeader(type, flags, streamId, length);
    header[0] = version;
    return new Uint8Array(header);
  });

const soup = fc.oneof(
  fc.uint8Array({ maxLength: 2048 }),
  fc
    .array(fc.oneof(plausibleHeader, fc.uint8Array({ maxLength: 48 })), { maxLength: 16 })
    .map((parts) => Buffer.concat(parts)),
);

const streamId = fc.oneof(fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: Limits.MAX_STREAM_ID }));
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const jsonObject = fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 5 });

// One valid frame of any type, as the encoders write it.
const validFrame: fc.Arbitrary<Buffer> = fc.oneof(
  fc
    .record({ id: streamId, fin: fc.boolean(), payload: fc.uint8Array({ maxLength: 600 }) })
    .map(({ id, fin, payload }) => encodeFrame(FrameType.DATA, fin ? Flag.FIN : 0, id, Buffer.from(payload))),
  fc.record({ id: streamId, increment: u32 }).map(({ id, increment }) => encodeWindowUpdate(id, increment)),
  fc
    .record({ ack: fc.boolean(), opaque: fc.uint8Array({ minLength: 8, maxLength: 8 }) })
    .map(({ ack, opaque }) => encodePing(ack, Buffer.from(opaque))),
  fc
    .record({ code: u32, reason: fc.string({ maxLength: 40 }) })
    .map(({ code, reason }) => encodeGoAway(code, reason)),
  fc
    .record({ id: streamId, meta: jsonObject })
    .map(({ id, meta }) => encodeJsonFrame(FrameType.SYN, id, meta)),
  streamId.map(encodeAck),
  fc
    .record({ id: streamId, code: u32, reason: fc.string({ maxLength: 40 }) })
    .map(({ id, code, reason }) => encodeRst(id, code, reason)),
  jsonObject.map((value) => encodeJsonFrame(FrameType.HELLO, 0, value)),
  jsonObject.map((value) => encodeJsonFrame(FrameType.WELCOME, 0, value)),
);
const validFrames = fc.array(validFrame, { maxLength: 12 });

function frameOf(bytes: Buffer): Frame {
  return {
    type: bytes[1]!,
    flags: bytes.readUInt16BE(2),
    streamId: bytes.readUInt32BE(4),
    payload: bytes.subarray(HEADER_SIZE),
  };
}

type Alloc = (size: number, ...rest: never[]) => Buffer;

/**
 * Runs `body` with the Buffer allocators wrapped, and returns the largest size asked for. Only the
 * calls made inside `body` are counted, so fast-check's own work does not show.
 */
function largestAllocation(body: () => void): number {
  let largest = 0;
  const names = ['alloc', 'allocUnsafe', 'allocUnsafeSlow'] as const;
  const originals = names.map((name) => Buffer[name] as Alloc);
  names.forEach((name, i) => {
    const original = originals[i]!;
    (Buffer as unknown as Record<string, Alloc>)[name] = (size: number, ...rest: never[]) => {
      largest = Math.max(largest, size);
      return original.call(Buffer, size, ...rest);
    };
  });
  try {
    body();
  } finally {
    names.forEach((name, i) => {
      (Buffer as unknown as Record<string, Alloc>)[name] = originals[i]!;
    });
  }
  return largest;
}

/** Feeds every chunk, stopping at the first error, which it returns. */
function feed(collector: FrameCollector, chunks: readonly Buffer[]): unknown {
  for (const chunk of chunks) {
    try {
      collector.push(chunk);
    } catch (err) {
      return err;
    }
  }
  return undefined;
}

describe('decoder fuzzing', () => {
  test('arbitrary bytes: frames or a ProtocolError, bounded output and allocation', () => {
    fc.assert(
      fc.property(soup, chunkSizes, (bytes, sizes) => {
        const input = Buffer.from(bytes);
        const collector = new FrameCollector();
        let error: unknown;
        const largest = largestAllocation(() => {
          error = feed(collector, chunked(input, sizes));
        });
        if (error !== undefined) {
          assert.ok(error instanceof ProtocolError, `not a ProtocolError: ${String(error)}`);
          assert.equal(typeof error.wireCode, 'number');
          // A failed decoder stays failed with the same error.
          assert.throws(
            () => collector.push(Buffer.from([1])),
            (again) => again === error,
          );
        }
        assert.ok(largest <= MAX_CONTROL_PAYLOAD + HEADER_SIZE, `allocated ${largest} bytes`);

        const delivered = collector.deliveries.reduce((n, payload) => n + payload.length, 0);
        assert.ok(delivered <= input.length, `delivered ${delivered} of ${input.length} bytes`);
        // Every call consumes at least one byte (a piece) or a header (an empty frame): no spinning.
        assert.ok(collector.deliveries.length <= input.length);
        for (const frame of collector.frames) {
          const max = frame.type === FrameType.DATA ? Limits.MAX_DATA_PAYLOAD : MAX_CONTROL_PAYLOAD;
          assert.ok(frame.payload.length <= max);
        }
      }),
      { numRuns: 1000, seed: 0x5eed01 },
    );
  });

  test('valid frames round trip in any chunking', () => {
    fc.assert(
      fc.property(validFrames, chunkSizes, (frames, sizes) => {
        const collector = new FrameCollector().pushAll(chunked(Buffer.concat(frames), sizes));
        assertFrames(collector.frames, frames.map(frameOf));
        assert.equal(collector.decoder.idle, true);
      }),
      { numRuns: 500, seed: 0x5eed02 },
    );
  });

  test('mutated valid frames: only ProtocolError is ever thrown', () => {
    const flip = fc.record({ at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) });
    fc.assert(
      fc.property(
        validFrames,
        fc.array(flip, { minLength: 1, maxLength: 4 }),
        fc.option(fc.nat()),
        chunkSizes,
        (frames, flips, cut, sizes) => {
          const input = Buffer.concat(frames);
          if (input.length === 0) return;
          for (const { at, xor } of flips) input[at % input.length]! ^= xor;
          const mutated = cut === null ? input : input.subarray(0, cut % input.length);
          const error = feed(new FrameCollector(), chunked(mutated, sizes));
          if (error !== undefined)
            assert.ok(error instanceof ProtocolError, `not a ProtocolError: ${String(error)}`);
        },
      ),
      { numRuns: 1000, seed: 0x5eed03 },
    );
  });

  test('truncated valid input: a prefix of the frames, and not idle inside a frame', () => {
    fc.assert(
      fc.property(validFrames, fc.nat(), chunkSizes, (frames, cutSeed, sizes) => {
        const input = Buffer.concat(frames);
        const cut = input.length === 0 ? 0 : cutSeed % input.length;
        const collector = new FrameCollector().pushAll(chunked(input.subarray(0, cut), sizes));

        const ends: number[] = [];
        for (const bytes of frames) ends.push((ends.at(-1) ?? 0) + bytes.length);
        const whole = ends.filter((end) => end <= cut).length;
        assertFrames(collector.frames, frames.slice(0, whole).map(frameOf));
        assert.equal(collector.decoder.idle, cut === 0 || ends.includes(cut));

        // Pieces of a DATA frame cut short are a prefix of its payload.
        if (collector.pending.length > 0) {
          const next = frameOf(frames[whole]!);
          assert.equal(next.type, FrameType.DATA);
          const got = join(collector.pending);
          assert.ok(got.length < next.payload.length);
          assert.ok(got.equals(next.payload.subarray(0, got.length)));
        }
      }),
      { numRuns: 500, seed: 0x5eed04 },
    );
  });
});
