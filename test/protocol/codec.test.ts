// The codec of docs/protocol.md §2–3: encoders and decoder round trip, input split anywhere decodes
// the same, every header violation fails with its wire code, and DATA is never copied.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { ProtocolError } from '../../src/errors.js';
import {
  decodeCodeReason,
  decodeJsonObject,
  describeFrame,
  encodeAck,
  encodeFrame,
  encodeGoAway,
  encodeHeader,
  encodeJsonFrame,
  encodePing,
  encodeRst,
  encodeWindowUpdate,
  FrameDecoder,
  frameTypeName,
  writeHeader,
} from '../../src/protocol/codec.js';
import { ErrorCode, Flag, FrameType, HEADER_SIZE, Limits } from '../../src/protocol/constants.js';
import { assertFrames, chunked, decodeAll, type Frame, frameDiff, splitAt } from '../helpers/frames.js';
import { plain, tableInSection } from '../helpers/markdown.js';

const MiB = 1024 * 1024;

interface TypeRule {
  readonly type: number;
  readonly session: boolean;
  readonly flags: number;
  readonly min: number;
  readonly max: number;
}

// What §3 says of each type, written out with literal numbers.
const RULES: readonly TypeRule[] = [
  { type: 0x0, session: false, flags: 0x1, min: 0, max: 16 * MiB },
  { type: 0x1, session: false, flags: 0x0, min: 4, max: 4 },
  { type: 0x2, session: true, flags: 0x2, min: 8, max: 8 },
  { type: 0x3, session: true, flags: 0x0, min: 4, max: 1028 },
  { type: 0x4, session: false, flags: 0x0, min: 2, max: 65536 },
  { type: 0x5, session: false, flags: 0x0, min: 0, max: 0 },
  { type: 0x6, session: false, flags: 0x0, min: 4, max: 1028 },
  { type: 0x7, session: true, flags: 0x0, min: 2, max: 16384 },
  { type: 0x8, session: true, flags: 0x0, min: 2, max: 16384 },
];

/** A header with any version, built by hand so that invalid ones can be made. */
function rawHeader(version: number, type: number, flags: number, streamId: number, length: number): Buffer {
  const buf = encodeHeader(type, flags, streamId, length);
  buf[0] = version;
  return buf;
}

function validStreamId(rule: TypeRule): number {
  return rule.session ? 0 : 1;
}

/** Pushes `bytes` into a fresh decoder and checks the ProtocolError it throws. */
function expectViolation(bytes: Buffer, wireCode: number, code: string, message?: RegExp): ProtocolError {
  const decoder = new FrameDecoder(() => {});
  let caught: unknown;
  try {
    decoder.push(bytes);
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof ProtocolError, `expected a ProtocolError for ${bytes.toString('hex')}`);
  assert.equal(caught.wireCode, wireCode, caught.message);
  assert.equal(caught.code, code);
  if (message) assert.match(caught.message, message);
  return caught;
}

function frameOf(bytes: Buffer): Frame {
  return {
    type: bytes[1]!,
    flags: bytes.readUInt16BE(2),
    streamId: bytes.readUInt32BE(4),
    payload: bytes.subarray(HEADER_SIZE),
  };
}

// A deterministic PRNG (mulberry32), so the random chunkings are the same on every run.
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('encoders and decoder round trip', () => {
  const opaque = Buffer.from('0102030405060708', 'hex');
  const cases: [string, Buffer, (frame: Frame) => void][] = [
    [
      'DATA with FIN',
      encodeFrame(FrameType.DATA, Flag.FIN, 7, Buffer.from('hello')),
      (f) => assert.equal(f.payload.toString(), 'hello'),
    ],
    [
      'DATA on the highest stream id',
      encodeFrame(FrameType.DATA, 0, Limits.MAX_STREAM_ID, Buffer.from('x')),
      () => {},
    ],
    [
      'empty DATA with FIN',
      encodeFrame(FrameType.DATA, Flag.FIN, 3),
      (f) => assert.equal(f.payload.length, 0),
    ],
    ['WINDOW_UPDATE of 1', encodeWindowUpdate(5, 1), (f) => assert.equal(f.payload.readUInt32BE(0), 1)],
    [
      'WINDOW_UPDATE of 2^31 - 1',
      encodeWindowUpdate(5, Limits.MAX_WINDOW),
      (f) => assert.equal(f.payload.readUInt32BE(0), 2 ** 31 - 1),
    ],
    ['PING', encodePing(false, opaque), (f) => assert.deepEqual(f.payload, opaque)],
    ['PING ACK', encodePing(true, opaque), (f) => assert.deepEqual(f.payload, opaque)],
    [
      'GO_AWAY',
      encodeGoAway(ErrorCode.VERSION_MISMATCH, 'peer sent v2'),
      (f) => assert.deepEqual(decodeCodeReason(f.payload), { code: 0x0d, reason: 'peer sent v2' }),
    ],
    [
      'GO_AWAY without reason',
      encodeGoAway(ErrorCode.NO_ERROR),
      (f) => assert.deepEqual(decodeCodeReason(f.payload), { code: 0, reason: '' }),
    ],
    [
      'SYN',
      encodeJsonFrame(FrameType.SYN, 9, { kind: 'http', target: 'http://web:8080', head: { m: 'GET' } }),
      (f) =>
        assert.deepEqual(decodeJsonObject(f.payload, 'SYN'), {
          kind: 'http',
          target: 'http://web:8080',
          head: { m: 'GET' },
        }),
    ],
    ['ACK', encodeAck(9), (f) => assert.equal(f.payload.length, 0)],
    [
      'RST',
      encodeRst(9, ErrorCode.TARGET_UNREACHABLE, 'connect ECONNREFUSED — señal'),
      (f) =>
        assert.deepEqual(decodeCodeReason(f.payload), { code: 0x11, reason: 'connect ECONNREFUSED — señal' }),
    ],
    [
      'HELLO',
      encodeJsonFrame(FrameType.HELLO, 0, { token: 'slu_x', agent: 'a', replica: 'r', window: 65536 }),
      (f) => assert.equal(decodeJsonObject(f.payload, 'HELLO').agent, 'a'),
    ],
    [
      'WELCOME',
      encodeJsonFrame(FrameType.WELCOME, 0, { session: 'c1f0', window: 4194304, caps: [] }),
      (f) => assert.deepEqual(decodeJsonObject(f.payload, 'WELCOME').caps, []),
    ],
  ];

  for (const [name, bytes, check] of cases) {
    test(name, () => {
      const collector = decodeAll([bytes]);
      assert.equal(collector.frames.length, 1);
      assertFrames(collector.frames, [frameOf(bytes)]);
      assert.equal(bytes.readUInt32BE(8), bytes.length - HEADER_SIZE, 'length is the payload byte count');
      assert.equal(collector.decoder.idle, true);
      check(collector.frames[0]!);
    });
  }

  test('every frame type has a case', () => {
    const covered = new Set(cases.map(([, bytes]) => bytes[1]));
    assert.deepEqual([...covered].sort(), Object.values(FrameType).sort());
  });

  test('the header layout is version, type, flags, stream id, length, big-endian', () => {
    assert.equal(
      encodeWindowUpdate(3, 65536).toString('hex'),
      '01' + '01' + '0000' + '00000003' + '00000004' + '00010000',
    );
    assert.equal(
      encodeRst(0x01020304, 6, 'x').toString('hex'),
      '01' + '06' + '0000' + '01020304' + '00000005' + '00000006' + '78',
    );
    assert.equal(encodePing(true, Buffer.alloc(8)).subarray(0, 4).toString('hex'), '01020002');
    const buf = Buffer.alloc(20);
    writeHeader(buf, 8, FrameType.DATA, Flag.FIN, 0xfffffffe, 0xabcdef);
    assert.equal(buf.toString('hex'), '00'.repeat(8) + '01000001fffffffe00abcdef');
  });

  test('a DATA header and its payload may come in separate chunks (as with writev)', () => {
    const payload = Buffer.from('separate');
    const collector = decodeAll([encodeHeader(FrameType.DATA, Flag.FIN, 11, payload.length), payload]);
    assertFrames(collector.frames, [{ type: 0, flags: Flag.FIN, streamId: 11, payload }]);
  });

  test('idle says whether a partial frame is held', () => {
    const bytes = encodeRst(1, ErrorCode.CANCEL, 'bye');
    const collector = decodeAll([]);
    assert.equal(collector.decoder.idle, true);
    collector.push(bytes.subarray(0, 5));
    assert.equal(collector.decoder.idle, false, 'inside the header');
    collector.push(bytes.subarray(5, 14));
    assert.equal(collector.decoder.idle, false, 'inside the payload');
    collector.push(bytes.subarray(14));
    assert.equal(collector.decoder.idle, true);
    assert.equal(collector.frames.length, 1);
  });
});

// A realistic exchange: handshake, streams, flow control, liveness, refusal, shutdown.
const BIG = Buffer.alloc(200 * 1024);
for (let i = 0; i < BIG.length; i++) BIG[i] = (i * 31 + 7) & 0xff;
const request = Buffer.from('GET /cart HTTP/1.1\r\nhost: shop.example\r\n\r\n');
const SCRIPT: readonly Buffer[] = [
  encodeJsonFrame(FrameType.HELLO, 0, {
    token: 'slu_0123456789',
    agent: 'shop-agent',
    replica: 'shop-agent-7d9f-x2',
    caps: ['http1', 'upgrade'],
    window: 4194304,
  }),
  encodeJsonFrame(FrameType.WELCOME, 0, { session: 'c1f0', window: 4194304, caps: ['http1'] }),
  encodeJsonFrame(FrameType.SYN, 1, { kind: 'http', target: 'http://web:8080', client: '203.0.113.7:51234' }),
  encodeFrame(FrameType.DATA, 0, 1, request),
  encodeAck(1),
  encodeJsonFrame(FrameType.SYN, 3, { kind: 'upgrade', target: 'http://ws:8080', requestId: 'r-2' }),
  Buffer.concat([encodeHeader(FrameType.DATA, 0, 3, BIG.length), BIG]),
  encodeWindowUpdate(1, 16384),
  encodePing(false, Buffer.from('pingpong')),
  encodeFrame(FrameType.DATA, Flag.FIN, 1, Buffer.from('tail bytes')),
  encodePing(true, Buffer.from('pingpong')),
  encodeFrame(FrameType.DATA, Flag.FIN, 3),
  encodeJsonFrame(FrameType.SYN, 5, { kind: 'http' }),
  encodeRst(5, ErrorCode.REFUSED_STREAM, 'draining'),
  encodeGoAway(ErrorCode.NO_ERROR, 'controller shutting down'),
];
const INPUT = Buffer.concat(SCRIPT);
const EXPECTED = SCRIPT.map(frameOf);

describe('a mixed frame sequence decodes the same however it is split', () => {
  const whole = decodeAll([INPUT]);

  test('unsplit, it decodes to the frames that were encoded', () => {
    assertFrames(whole.frames, EXPECTED);
    assert.equal(whole.decoder.idle, true);
  });

  test('split into two chunks at every byte offset', () => {
    for (let cut = 0; cut <= INPUT.length; cut++) {
      const split = decodeAll(splitAt(INPUT, [cut]));
      const diff = frameDiff(split.frames, whole.frames);
      if (diff !== null) assert.fail(`split at ${cut}: ${diff}`);
      if (!split.decoder.idle) assert.fail(`split at ${cut}: decoder not idle at the end`);
    }
  });

  test('fed one byte at a time', () => {
    const split = decodeAll(chunked(INPUT, [1]));
    assertFrames(split.frames, whole.frames);
    assert.equal(split.decoder.idle, true);
  });

  test('in 200 random chunkings', () => {
    const random = prng(0x511ce);
    for (let run = 0; run < 200; run++) {
      // Sizes spread over 1 byte to 64 KiB, so both tiny and huge chunks occur.
      const sizes = Array.from({ length: 1 + Math.floor(random() * 16) }, () =>
        Math.ceil(2 ** (random() * 16)),
      );
      const split = decodeAll(chunked(INPUT, sizes));
      assertFrames(split.frames, whole.frames, `chunk sizes ${sizes.join(',')}`);
      assert.equal(split.decoder.idle, true);
    }
  });

  test('DATA is delivered in the pieces in which it came, FIN only on the last', () => {
    const data = Buffer.concat([encodeHeader(FrameType.DATA, Flag.FIN, 3, BIG.length), BIG]);
    const split = decodeAll(splitAt(data, [HEADER_SIZE + 1000, HEADER_SIZE + 51_000]));
    assert.deepEqual(
      split.deliveries.map((piece) => piece.length),
      [1000, 50_000, BIG.length - 51_000],
    );
    assertFrames(split.frames, [{ type: FrameType.DATA, flags: Flag.FIN, streamId: 3, payload: BIG }]);
  });

  test('a control frame split across chunks is delivered whole, once', () => {
    const hello = SCRIPT[0]!;
    const split = decodeAll(chunked(hello, [1]));
    assert.equal(split.deliveries.length, 1);
    assertFrames(split.frames, [frameOf(hello)]);
  });
});

describe('the decoder never copies DATA', () => {
  test('a payload from one chunk shares memory with the chunk', () => {
    // Buffer.alloc never takes from the shared pool, so sharing an ArrayBuffer proves a view.
    const chunk = Buffer.alloc(HEADER_SIZE + 100);
    writeHeader(chunk, 0, FrameType.DATA, Flag.FIN, 1, 100);
    chunk.fill(0x61, HEADER_SIZE);
    const { deliveries } = decodeAll([chunk]);
    assert.equal(deliveries.length, 1);
    const payload = deliveries[0]!;
    assert.equal(payload.buffer, chunk.buffer);
    assert.equal(payload.byteOffset, chunk.byteOffset + HEADER_SIZE);
    chunk[HEADER_SIZE] = 0x62;
    assert.equal(payload[0], 0x62, 'a write to the chunk shows through the payload');
  });

  test('each piece of a split payload is a view of its own chunk', () => {
    const first = Buffer.alloc(HEADER_SIZE + 10);
    writeHeader(first, 0, FrameType.DATA, 0, 1, 30);
    const second = Buffer.alloc(20);
    const { deliveries } = decodeAll([first, second]);
    assert.deepEqual(
      deliveries.map((piece) => piece.length),
      [10, 20],
    );
    assert.equal(deliveries[0]!.buffer, first.buffer);
    assert.equal(deliveries[1]!.buffer, second.buffer);
    assert.equal(deliveries[1]!.byteOffset, second.byteOffset);
  });
});

describe('header violations', () => {
  test('the rules written here are those of docs/protocol.md §3', () => {
    const spec = readFileSync(new URL('../../../docs/protocol.md', import.meta.url), 'utf8');
    const table = tableInSection(spec, '3. Frame types', ['type', 'name', 'stream id', 'flags', 'payload']);
    const documented = table.rows.map((row) => {
      const flags = [...plain(row[3]!).matchAll(/\((0x[0-9a-f]+)\)/gi)].reduce(
        (all, match) => all | Number.parseInt(match[1]!, 16),
        0,
      );
      return {
        type: Number.parseInt(plain(row[0]!), 16),
        session: plain(row[2]!) === '0',
        flags,
        ...payloadBounds(plain(row[4]!)),
      };
    });
    assert.deepEqual(documented, RULES);
  });

  test('another version is VERSION_MISMATCH, for every type but GO_AWAY', () => {
    for (const rule of RULES) {
      if (rule.type === FrameType.GO_AWAY) continue;
      for (const version of [0, 2, 0xff]) {
        const err = expectViolation(
          rawHeader(version, rule.type, 0, validStreamId(rule), rule.min),
          ErrorCode.VERSION_MISMATCH,
          'SLUICE_ERR_VERSION_MISMATCH',
        );
        assert.match(err.message, new RegExp(`v${version}\\b.*v1\\b`));
      }
    }
  });

  test('the version is checked before the type', () => {
    expectViolation(rawHeader(2, 0x42, 0, 0, 0), ErrorCode.VERSION_MISMATCH, 'SLUICE_ERR_VERSION_MISMATCH');
  });

  test('a GO_AWAY of another version is accepted, so the mismatch can be reported', () => {
    const goAway = encodeGoAway(ErrorCode.VERSION_MISMATCH, 'controller speaks v2');
    goAway[0] = 2;
    const collector = decodeAll([goAway]);
    assert.equal(collector.frames.length, 1);
    assert.deepEqual(decodeCodeReason(collector.frames[0]!.payload), {
      code: ErrorCode.VERSION_MISMATCH,
      reason: 'controller speaks v2',
    });
    assert.throws(() => collector.push(rawHeader(2, FrameType.PING, 0, 0, 8)), { wireCode: 0x0d });
  });

  test('an unknown type is PROTOCOL_ERROR', () => {
    for (let type = 0x09; type <= 0xff; type++) {
      expectViolation(
        rawHeader(1, type, 0, 0, 0),
        ErrorCode.PROTOCOL_ERROR,
        'SLUICE_ERR_PROTOCOL',
        /unknown/,
      );
    }
  });

  test('every flag bit a type does not define is PROTOCOL_ERROR; defined ones pass', () => {
    for (const rule of RULES) {
      for (let bit = 0; bit < 16; bit++) {
        const header = rawHeader(1, rule.type, 1 << bit, validStreamId(rule), rule.min);
        if ((rule.flags & (1 << bit)) !== 0) {
          decodeAll([header]);
        } else {
          expectViolation(header, ErrorCode.PROTOCOL_ERROR, 'SLUICE_ERR_PROTOCOL', /flags/);
        }
      }
    }
  });

  test('stream id 0 on a stream frame and a non-zero id on a session frame are PROTOCOL_ERROR', () => {
    for (const rule of RULES) {
      for (const streamId of rule.session ? [1, 2, Limits.MAX_STREAM_ID] : [0]) {
        expectViolation(
          rawHeader(1, rule.type, 0, streamId, rule.min),
          ErrorCode.PROTOCOL_ERROR,
          'SLUICE_ERR_PROTOCOL',
          /stream/,
        );
      }
    }
  });

  test('a length below the minimum or above the maximum is FRAME_SIZE_ERROR; the bounds pass', () => {
    for (const rule of RULES) {
      const bad = [rule.max + 1, 0xffffffff];
      if (rule.min > 0) bad.push(rule.min - 1, 0);
      for (const length of bad) {
        expectViolation(
          rawHeader(1, rule.type, 0, validStreamId(rule), length),
          ErrorCode.FRAME_SIZE_ERROR,
          'SLUICE_ERR_FRAME_SIZE',
          new RegExp(`length ${length} `),
        );
      }
      for (const length of [rule.min, rule.max]) {
        // The header alone is accepted: the decoder waits for the payload without failing.
        const collector = decodeAll([rawHeader(1, rule.type, 0, validStreamId(rule), length)]);
        assert.equal(collector.decoder.idle, length === 0);
      }
    }
  });

  test('a violation is found from the header alone, even fed one byte at a time', () => {
    const header = rawHeader(1, FrameType.SYN, 0, 1, 0xffffffff);
    const decoder = new FrameDecoder(() => {});
    for (let i = 0; i < HEADER_SIZE - 1; i++) decoder.push(header.subarray(i, i + 1));
    assert.throws(() => decoder.push(header.subarray(HEADER_SIZE - 1)), {
      wireCode: ErrorCode.FRAME_SIZE_ERROR,
    });
  });

  test('after a failure the decoder delivers nothing more and throws the same error', () => {
    const good = encodeAck(1);
    const bad = rawHeader(1, 0x30, 0, 0, 0);
    const collector = decodeAll([]);
    let first: unknown;
    try {
      collector.push(Buffer.concat([good, bad, good]));
    } catch (err) {
      first = err;
    }
    assert.ok(first instanceof ProtocolError);
    assert.equal(collector.frames.length, 1, 'the frame before the bad header was delivered');
    for (const chunk of [good, Buffer.alloc(0), bad]) {
      assert.throws(
        () => collector.push(chunk),
        (err) => err === first,
      );
    }
    assert.equal(collector.frames.length, 1);
  });
});

/** Payload bounds from a §3 payload cell: "4 to 1028 bytes", "exactly 4 bytes", "empty", … */
function payloadBounds(cell: string): { min: number; max: number } {
  if (cell === 'empty') return { min: 0, max: 0 };
  const range = /(\d+) to (\d+) (bytes|MiB)$/.exec(cell);
  if (range) {
    const scale = range[3] === 'MiB' ? MiB : 1;
    return { min: Number(range[1]) * scale, max: Number(range[2]) * scale };
  }
  const exact = /exactly (\d+) bytes$/.exec(cell) ?? /^(\d+) \w+ bytes, exactly$/.exec(cell);
  if (exact) return { min: Number(exact[1]), max: Number(exact[1]) };
  throw new Error(`unreadable payload cell: ${cell}`);
}

describe('JSON payloads', () => {
  test('decodeJsonObject accepts objects only', () => {
    assert.deepEqual(decodeJsonObject(Buffer.from('{}'), 'SYN'), {});
    assert.deepEqual(decodeJsonObject(Buffer.from('{"a":[1,{"b":null}]}'), 'SYN'), { a: [1, { b: null }] });
    for (const text of ['not json', '{"a":', '', '[1,2]', '[]', 'null', '42', '"text"', 'true']) {
      assert.throws(
        () => decodeJsonObject(Buffer.from(text), 'HELLO'),
        (err) =>
          err instanceof ProtocolError &&
          err.wireCode === ErrorCode.PROTOCOL_ERROR &&
          err.code === 'SLUICE_ERR_PROTOCOL' &&
          err.message.startsWith('HELLO payload'),
        text,
      );
    }
  });

  test('encodeJsonFrame takes payloads up to the SYN and HELLO/WELCOME limits and refuses more', () => {
    // {"a":"…"} is 8 bytes around the string.
    const sized = (bytes: number) => ({ a: 'x'.repeat(bytes - 8) });
    for (const [type, max] of [
      [FrameType.SYN, 65536],
      [FrameType.HELLO, 16384],
      [FrameType.WELCOME, 16384],
    ] as const) {
      const streamId = type === FrameType.SYN ? 1 : 0;
      const atLimit = encodeJsonFrame(type, streamId, sized(max));
      assert.equal(atLimit.length, HEADER_SIZE + max);
      assert.equal(decodeAll([atLimit]).frames.length, 1, 'the decoder takes a frame at the limit');
      assert.throws(() => encodeJsonFrame(type, streamId, sized(max + 1)), RangeError);
    }
  });
});

describe('reasons', () => {
  test('a reason over 1024 bytes is truncated by encodeRst and encodeGoAway', () => {
    for (const encode of [
      (r: string) => encodeRst(1, ErrorCode.CANCEL, r),
      (r: string) => encodeGoAway(0, r),
    ]) {
      assert.equal(decodeCodeReason(frameOf(encode('r'.repeat(1024))).payload).reason.length, 1024);
      const long = frameOf(encode('r'.repeat(1025) + 'more'));
      assert.equal(long.payload.length, 4 + 1024);
      assert.equal(decodeCodeReason(long.payload).reason, 'r'.repeat(1024));
      assert.equal(decodeAll([encode('x'.repeat(5000))]).frames.length, 1, 'the decoder takes it');
    }
  });

  test('truncation keeps the reason valid UTF-8', () => {
    // '€' is 3 bytes; at 1023 ASCII bytes it would straddle the limit, so it is dropped whole.
    const payload = frameOf(encodeRst(1, ErrorCode.CANCEL, 'a'.repeat(1023) + '€')).payload;
    assert.equal(payload.length, 4 + 1023);
    const strict = new TextDecoder('utf-8', { fatal: true });
    for (const filler of [1020, 1021, 1022, 1023]) {
      const reason = 'a'.repeat(filler) + '😀€é';
      const text = frameOf(encodeGoAway(0, reason)).payload.subarray(4);
      assert.ok(text.length <= 1024);
      assert.ok(reason.startsWith(strict.decode(text)), `filler ${filler}`);
    }
  });
});

describe('trace output', () => {
  test('describeFrame prints type, stream, length and named flags', () => {
    assert.equal(describeFrame(FrameType.DATA, Flag.FIN, 3, 65536), 'DATA stream=3 len=65536 flags=FIN');
    assert.equal(describeFrame(FrameType.DATA, 0, 3, 10), 'DATA stream=3 len=10');
    assert.equal(describeFrame(FrameType.PING, Flag.ACK, 0, 8), 'PING stream=0 len=8 flags=ACK');
    assert.equal(describeFrame(FrameType.WINDOW_UPDATE, 0, 1, 4), 'WINDOW_UPDATE stream=1 len=4');
    assert.equal(describeFrame(FrameType.GO_AWAY, 0, 0, 4), 'GO_AWAY stream=0 len=4');
    assert.equal(describeFrame(0x2a, Flag.FIN | Flag.ACK, 9, 0), '0x2a stream=9 len=0 flags=FIN|ACK');
  });

  test('frameTypeName is the constant name of every type', () => {
    for (const [name, type] of Object.entries(FrameType)) assert.equal(frameTypeName(type), name);
    assert.equal(frameTypeName(0x9), '0x9');
  });
});
