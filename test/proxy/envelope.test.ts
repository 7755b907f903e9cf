// The record codec of docs/http-over-streams.md: constants pinned to the spec, round trips, input
// split anywhere decodes the same, every order, limit and JSON violation is an EnvelopeError, BODY is
// never copied, and arbitrary bytes never produce anything but an EnvelopeError.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { ErrorCode } from '../../src/protocol/constants.js';
import {
  type Direction,
  encodeBodyHeader,
  encodeHead,
  encodeTrailers,
  EnvelopeDecoder,
  EnvelopeError,
  type EnvelopeOptions,
  MAX_BODY_PAYLOAD,
  MAX_HEAD_PAYLOAD,
  RECORD_HEADER_SIZE,
  RecordKind,
  type ResponseHead,
} from '../../src/proxy/envelope.js';
import { plain, tableInSection } from '../helpers/markdown.js';

type Event =
  | readonly ['head', ResponseHead]
  | readonly ['body', Buffer]
  | readonly ['trailers', string[]]
  | readonly ['raw', Buffer];

/** Collects what a decoder reports; pieces of body and raw bytes are kept as they arrived. */
class Collector {
  readonly events: Event[] = [];
  readonly decoder: EnvelopeDecoder;

  constructor(direction: Direction, options: EnvelopeOptions = {}, upgrade = true) {
    const handlers = {
      onHead: (head: ResponseHead) => void this.events.push(['head', head]),
      onBody: (piece: Buffer) => void this.events.push(['body', piece]),
      onTrailers: (raw: string[]) => void this.events.push(['trailers', raw]),
      ...(upgrade ? { onRaw: (piece: Buffer) => void this.events.push(['raw', piece]) } : {}),
    };
    this.decoder = new EnvelopeDecoder(direction, handlers, options);
  }

  /** Adjacent body (or raw) pieces joined, so that results of different chunkings compare equal. */
  normalized(): Event[] {
    const out: Event[] = [];
    let run: Buffer[] = [];
    this.events.forEach((event, i) => {
      if (event[0] !== 'body' && event[0] !== 'raw') return void out.push(event);
      run.push(event[1]);
      if (this.events[i + 1]?.[0] === event[0]) return;
      out.push([event[0], Buffer.concat(run)]);
      run = [];
    });
    return out;
  }
}

function body(payload: Buffer): Buffer {
  return Buffer.concat([encodeBodyHeader(payload.length), payload]);
}

function record(kind: number, payload: Buffer | string): Buffer {
  const bytes = Buffer.from(payload);
  const header = Buffer.alloc(RECORD_HEADER_SIZE);
  header[0] = kind;
  header.writeUInt32BE(bytes.length, 1);
  return Buffer.concat([header, bytes]);
}

function decode(direction: Direction, chunks: readonly Buffer[], options: EnvelopeOptions = {}): Event[] {
  const collector = new Collector(direction, options);
  for (const chunk of chunks) collector.decoder.push(chunk);
  collector.decoder.finish();
  return collector.normalized();
}

function splitAt(bytes: Buffer, cut: number): Buffer[] {
  return [bytes.subarray(0, cut), bytes.subarray(cut)];
}

function chunked(bytes: Buffer, sizes: readonly number[]): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0, i = 0; off < bytes.length; i++) {
    const size = sizes[i % sizes.length]!;
    out.push(bytes.subarray(off, off + size));
    off += size;
  }
  return out;
}

function expectEnvelopeError(fn: () => void, message?: RegExp): EnvelopeError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof EnvelopeError, `expected an EnvelopeError, got ${String(caught)}`);
  assert.equal(caught.code, 'SLUICE_ERR_PROTOCOL');
  assert.equal(caught.wireCode, ErrorCode.PROTOCOL_ERROR);
  if (message) assert.match(caught.message, message);
  return caught;
}

/** Pushes `bytes` (whole, then byte by byte) into fresh decoders and expects an EnvelopeError. */
function expectViolation(direction: Direction, bytes: Buffer, message?: RegExp, upgrade = true): void {
  for (const chunks of [[bytes], chunked(bytes, [1])]) {
    const { decoder } = new Collector(direction, {}, upgrade);
    expectEnvelopeError(() => {
      for (const chunk of chunks) decoder.push(chunk);
      decoder.finish();
    }, message);
  }
}

const HEAD_200: ResponseHead = { status: 200, statusText: 'OK', headers: ['Content-Type', 'text/plain'] };
const HEAD_100: ResponseHead = { status: 100, headers: [] };
const TRAILERS = ['Grpc-Status', '0', 'Grpc-Message', 'ok'];

// A response with an interim HEAD, three BODY records (one of 200 KiB) and TRAILERS.
const big = Buffer.alloc(200 * 1024);
for (let i = 0; i < big.length; i++) big[i] = (i * 31 + 7) & 0xff;
const REALISTIC = Buffer.concat([
  encodeHead(HEAD_100),
  encodeHead(HEAD_200),
  body(Buffer.from('hello, ')),
  body(big),
  body(Buffer.from('world')),
  encodeTrailers(TRAILERS),
]);
const REALISTIC_EVENTS: Event[] = [
  ['head', HEAD_100],
  ['head', HEAD_200],
  ['body', Buffer.concat([Buffer.from('hello, '), big, Buffer.from('world')])],
  ['trailers', TRAILERS],
];

describe('constants', () => {
  test('match the numbers of docs/http-over-streams.md', () => {
    assert.deepEqual(RecordKind, { HEAD: 0x1, BODY: 0x2, TRAILERS: 0x3, COMPACT_HEAD: 0x4 });
    assert.equal(RECORD_HEADER_SIZE, 5);
    assert.equal(MAX_HEAD_PAYLOAD, 65536);
    assert.equal(MAX_BODY_PAYLOAD, 16777216);
  });

  test('match the records table of the spec', () => {
    const spec = readFileSync(new URL('../../../docs/http-over-streams.md', import.meta.url), 'utf8');
    const table = tableInSection(spec, 'Records', ['kind', 'name', 'payload', 'limit']);
    const units: Record<string, number> = { KiB: 1024, MiB: 1024 * 1024 };
    const documented = table.rows.map((row) => {
      const [, amount, unit] = /^(\d+) (KiB|MiB)$/.exec(plain(row[3]!))!;
      return [plain(row[1]!), Number.parseInt(plain(row[0]!), 16), Number(amount) * units[unit!]!];
    });
    assert.deepEqual(documented, [
      ['HEAD', RecordKind.HEAD, MAX_HEAD_PAYLOAD],
      ['BODY', RecordKind.BODY, MAX_BODY_PAYLOAD],
      ['TRAILERS', RecordKind.TRAILERS, MAX_HEAD_PAYLOAD],
      ['COMPACT_HEAD', RecordKind.COMPACT_HEAD, MAX_HEAD_PAYLOAD],
    ]);
  });
});

describe('encoders', () => {
  test('encodeHead writes kind, big-endian length and JSON', () => {
    const buf = encodeHead({ status: 204, headers: ['X-A', '1'] });
    assert.equal(buf[0], RecordKind.HEAD);
    assert.equal(buf.readUInt32BE(1), buf.length - RECORD_HEADER_SIZE);
    assert.deepEqual(JSON.parse(buf.toString('utf8', RECORD_HEADER_SIZE)), {
      status: 204,
      headers: ['X-A', '1'],
    });
  });

  test('encodeBodyHeader is 5 bytes', () => {
    assert.deepEqual(encodeBodyHeader(0x00fe0304), Buffer.from([0x2, 0x00, 0xfe, 0x03, 0x04]));
    assert.equal(encodeBodyHeader(MAX_BODY_PAYLOAD).readUInt32BE(1), MAX_BODY_PAYLOAD);
  });

  test('encodeTrailers writes the raw list', () => {
    assert.deepEqual(encodeTrailers(['A', 'b']), Buffer.from('\x03\x00\x00\x00\x09["A","b"]'));
  });

  test('refuse what a decoder would refuse', () => {
    for (const status of [99, 1000, 200.5, Number.NaN]) {
      assert.throws(() => encodeHead({ status, headers: [] }), RangeError);
    }
    assert.throws(() => encodeHead({ status: 200, headers: ['odd'] }), RangeError);
    const huge = 'x'.repeat(MAX_HEAD_PAYLOAD);
    assert.throws(() => encodeHead({ status: 200, headers: ['X-Big', huge] }), RangeError);
    assert.throws(() => encodeTrailers(['X-Big', huge]), RangeError);
    assert.throws(() => encodeTrailers(['odd']), RangeError);
    for (const length of [0, -1, 1.5, MAX_BODY_PAYLOAD + 1]) {
      assert.throws(() => encodeBodyHeader(length), RangeError);
    }
  });

  test('a head just under the limit encodes and decodes', () => {
    const overhead = encodeHead({ status: 200, headers: ['X', ''] }).length - RECORD_HEADER_SIZE;
    const head = { status: 200, headers: ['X', 'y'.repeat(MAX_HEAD_PAYLOAD - overhead)] };
    const buf = encodeHead(head);
    assert.equal(buf.length, RECORD_HEADER_SIZE + MAX_HEAD_PAYLOAD);
    assert.deepEqual(decode('response', [buf]), [['head', head]]);
  });
});

describe('round trips', () => {
  test('request: bodies and trailers', () => {
    const bytes = Buffer.concat([
      body(Buffer.from('abc')),
      body(Buffer.from('def')),
      encodeTrailers(TRAILERS),
    ]);
    assert.deepEqual(decode('request', [bytes]), [
      ['body', Buffer.from('abcdef')],
      ['trailers', TRAILERS],
    ]);
  });

  test('request: an empty request is just FIN', () => {
    assert.deepEqual(decode('request', []), []);
  });

  test('response: heads keep statusText, headers and non-ASCII', () => {
    const heads: ResponseHead[] = [
      { status: 103, headers: ['Link', '</a.css>; rel=preload'] },
      { status: 418, statusText: 'I’m a teapot ☕', headers: ['Set-Cookie', 'a=1', 'set-cookie', 'b=2'] },
    ];
    assert.deepEqual(decode('response', [Buffer.concat(heads.map(encodeHead))]), [
      ['head', heads[0]],
      ['head', heads[1]],
    ]);
  });

  test('response: HEAD only, and empty trailers', () => {
    assert.deepEqual(decode('response', [encodeHead({ status: 204, headers: [] })]), [
      ['head', { status: 204, headers: [] }],
    ]);
    assert.deepEqual(decode('response', [encodeHead(HEAD_200), encodeTrailers([])]), [
      ['head', HEAD_200],
      ['trailers', []],
    ]);
  });

  test('unknown HEAD keys are ignored', () => {
    const bytes = record(RecordKind.HEAD, '{"status":200,"headers":[],"extra":1}');
    assert.deepEqual(decode('response', [bytes]), [['head', { status: 200, headers: [] }]]);
  });
});

describe('chunking', () => {
  test('split at every offset decodes the same', () => {
    // The middle of the 200 KiB body is one state (inside BODY), so it is sampled; every other offset is tried.
    const bigStart = REALISTIC.indexOf(big.subarray(0, 64));
    const bigEnd = bigStart + big.length;
    for (let cut = 0; cut <= REALISTIC.length; cut++) {
      if (cut > bigStart + 4096 && cut < bigEnd - 4096 && cut % 1021 !== 0) continue;
      assert.deepEqual(decode('response', splitAt(REALISTIC, cut)), REALISTIC_EVENTS, `cut at ${cut}`);
    }
  });

  test('split at every offset of a small response decodes the same', () => {
    const small = Buffer.concat([
      encodeHead(HEAD_100),
      encodeHead(HEAD_200),
      body(Buffer.from('a')),
      body(Buffer.from('bc')),
      encodeTrailers(TRAILERS),
    ]);
    const expected = decode('response', [small]);
    for (let cut = 0; cut <= small.length; cut++) {
      for (let second = cut; second <= small.length; second++) {
        const chunks = [small.subarray(0, cut), small.subarray(cut, second), small.subarray(second)];
        assert.deepEqual(decode('response', chunks), expected, `cuts at ${cut}, ${second}`);
      }
    }
  });

  test('one byte at a time decodes the same', () => {
    assert.deepEqual(decode('response', chunked(REALISTIC, [1])), REALISTIC_EVENTS);
  });

  test('random chunkings decode the same', () => {
    const sizes = fc.array(fc.oneof(fc.integer({ min: 1, max: 16 }), fc.integer({ min: 1, max: 70000 })), {
      minLength: 1,
      maxLength: 8,
    });
    fc.assert(
      fc.property(sizes, (chunkSizes) => {
        assert.deepEqual(decode('response', chunked(REALISTIC, chunkSizes)), REALISTIC_EVENTS);
      }),
      { numRuns: 100, seed: 0xe4e101 },
    );
  });

  test('idle is true only at a record boundary', () => {
    const { decoder } = new Collector('response');
    assert.equal(decoder.idle, true);
    const head = encodeHead(HEAD_200);
    decoder.push(head.subarray(0, 3));
    assert.equal(decoder.idle, false);
    decoder.push(head.subarray(3, 8));
    assert.equal(decoder.idle, false);
    decoder.push(head.subarray(8));
    assert.equal(decoder.idle, true);
  });
});

describe('upgrades', () => {
  const upgradeHead: ResponseHead = {
    status: 101,
    statusText: 'Switching Protocols',
    headers: ['Upgrade', 'ws'],
  };

  test('101 switches to raw mode within the same chunk and after it', () => {
    const collector = new Collector('response');
    const chunk = Buffer.concat([encodeHead(HEAD_100), encodeHead(upgradeHead), Buffer.from([1, 2, 3])]);
    collector.decoder.push(chunk);
    assert.equal(collector.decoder.raw, true);
    // Raw bytes are views of the chunk, and anything that looks like a record is just bytes now.
    const [, raw] = collector.events[2] as ['raw', Buffer];
    assert.equal(raw.buffer, chunk.buffer);
    const later = encodeHead(HEAD_200);
    collector.decoder.push(later);
    collector.decoder.push(Buffer.from([9]));
    collector.decoder.finish();
    assert.equal((collector.events[3] as ['raw', Buffer])[1], later);
    assert.deepEqual(collector.normalized(), [
      ['head', HEAD_100],
      ['head', upgradeHead],
      ['raw', Buffer.concat([Buffer.from([1, 2, 3]), later, Buffer.from([9])])],
    ]);
  });

  test('101 split at every offset decodes the same', () => {
    const bytes = Buffer.concat([encodeHead(upgradeHead), Buffer.from('raw bytes')]);
    const expected = [
      ['head', upgradeHead],
      ['raw', Buffer.from('raw bytes')],
    ];
    for (let cut = 0; cut <= bytes.length; cut++) {
      assert.deepEqual(decode('response', splitAt(bytes, cut)), expected, `cut at ${cut}`);
    }
  });

  test('a non-101 answer to an upgrade is an ordinary response', () => {
    const bytes = Buffer.concat([encodeHead({ status: 400, headers: [] }), body(Buffer.from('no'))]);
    assert.deepEqual(decode('response', [bytes]), [
      ['head', { status: 400, headers: [] }],
      ['body', Buffer.from('no')],
    ]);
  });

  test('request direction with raw: true passes every byte through, zero-copy', () => {
    const collector = new Collector('request', { raw: true });
    assert.equal(collector.decoder.raw, true);
    const first = encodeHead(HEAD_200);
    const second = Buffer.from([0xff, 0, 0, 0, 0]);
    collector.decoder.push(first);
    collector.decoder.push(second);
    collector.decoder.finish();
    assert.equal(collector.events.length, 2);
    assert.equal(collector.events[0]![1], first);
    assert.equal(collector.events[1]![1], second);
  });

  test('raw: true is refused where it does not apply', () => {
    const handlers = { onHead() {}, onBody() {}, onTrailers() {} };
    assert.throws(() => new EnvelopeDecoder('request', handlers, { raw: true }), TypeError);
    assert.throws(
      () => new EnvelopeDecoder('response', { ...handlers, onRaw() {} }, { raw: true }),
      TypeError,
    );
    assert.throws(() => new EnvelopeDecoder('response', { onBody() {}, onTrailers() {} }), TypeError);
  });

  test('101 without an onRaw handler is an error', () => {
    expectViolation('response', encodeHead(upgradeHead), /101/, false);
  });
});

describe('zero copy', () => {
  test('BODY pieces are views of the pushed chunk', () => {
    const collector = new Collector('response');
    const chunk = Buffer.concat([encodeHead(HEAD_200), body(Buffer.from('abc')), body(Buffer.from('de'))]);
    collector.decoder.push(chunk);
    const pieces = collector.events.filter((event) => event[0] === 'body').map((event) => event[1] as Buffer);
    assert.equal(pieces.length, 2);
    for (const piece of pieces) assert.equal(piece.buffer, chunk.buffer);
  });

  test('a BODY split across chunks is delivered in pieces, each a view of its chunk', () => {
    const collector = new Collector('request');
    const bytes = body(Buffer.from('abcdef'));
    const chunks = [bytes.subarray(0, 7), bytes.subarray(7, 9), bytes.subarray(9)];
    for (const chunk of chunks) collector.decoder.push(chunk);
    assert.deepEqual(
      collector.events.map((event) => event[1]),
      [Buffer.from('ab'), Buffer.from('cd'), Buffer.from('ef')],
    );
    collector.events.forEach((event, i) => assert.equal((event[1] as Buffer).buffer, chunks[i]!.buffer));
  });
});

describe('violations', () => {
  const head = encodeHead(HEAD_200);
  const bodyRecord = body(Buffer.from('x'));
  const trailers = encodeTrailers(TRAILERS);

  test('unknown kinds', () => {
    for (const kind of [0x0, 0x5, 0xff]) {
      expectViolation('request', record(kind, 'xx'), /unknown record kind/);
      expectViolation('response', record(kind, 'xx'), /unknown record kind/);
    }
  });

  test('lengths outside the limits, refused from the header alone', () => {
    const header = (kind: number, length: number) => {
      const buf = Buffer.alloc(RECORD_HEADER_SIZE);
      buf[0] = kind;
      buf.writeUInt32BE(length, 1);
      return buf;
    };
    const cases: [Direction, number, number][] = [
      ['request', RecordKind.BODY, 0],
      ['request', RecordKind.BODY, MAX_BODY_PAYLOAD + 1],
      ['request', RecordKind.BODY, 0xffffffff],
      ['request', RecordKind.TRAILERS, 0],
      ['request', RecordKind.TRAILERS, 1],
      ['request', RecordKind.TRAILERS, MAX_HEAD_PAYLOAD + 1],
      ['response', RecordKind.HEAD, 0],
      ['response', RecordKind.HEAD, MAX_HEAD_PAYLOAD + 1],
    ];
    for (const [direction, kind, length] of cases) {
      expectViolation(direction, header(kind, length), /outside/);
    }
  });

  test('request direction order', () => {
    expectViolation('request', head, /HEAD record in the request direction/);
    expectViolation('request', Buffer.concat([bodyRecord, head]), /HEAD record in the request direction/);
    expectViolation('request', Buffer.concat([trailers, bodyRecord]), /BODY record after TRAILERS/);
    expectViolation('request', Buffer.concat([trailers, trailers]), /TRAILERS record after TRAILERS/);
  });

  test('response direction order', () => {
    const interim = encodeHead(HEAD_100);
    expectViolation('response', bodyRecord, /BODY record before the final HEAD/);
    expectViolation('response', trailers, /TRAILERS record before the final HEAD/);
    expectViolation('response', Buffer.concat([interim, bodyRecord]), /before the final HEAD/);
    expectViolation('response', Buffer.concat([head, head]), /HEAD record after the final HEAD/);
    expectViolation('response', Buffer.concat([head, bodyRecord, interim]), /after the final HEAD/);
    expectViolation('response', Buffer.concat([head, trailers, head]), /HEAD record after TRAILERS/);
    expectViolation('response', Buffer.concat([head, trailers, bodyRecord]), /BODY record after TRAILERS/);
    expectViolation('response', Buffer.concat([head, trailers, trailers]), /TRAILERS record after TRAILERS/);
  });

  test('bad HEAD payloads', () => {
    const payloads = [
      'not json',
      '{"status":200,"headers":[]',
      '[200]',
      'null',
      '"a string"',
      '{"headers":[]}',
      '{"status":"200","headers":[]}',
      '{"status":99,"headers":[]}',
      '{"status":1000,"headers":[]}',
      '{"status":200.5,"headers":[]}',
      '{"status":200}',
      '{"status":200,"headers":{}}',
      '{"status":200,"headers":["odd"]}',
      '{"status":200,"headers":["X",1]}',
      '{"status":200,"headers":[],"statusText":7}',
    ];
    for (const payload of payloads) expectViolation('response', record(RecordKind.HEAD, payload));
    const invalidUtf8 = Buffer.concat([
      Buffer.from('{"status":200,"headers":["X","'),
      Buffer.from([0xff]),
      Buffer.from('"]}'),
    ]);
    expectViolation('response', record(RecordKind.HEAD, invalidUtf8), /UTF-8/);
  });

  test('bad TRAILERS payloads', () => {
    for (const payload of ['{}', '["odd"]', '["X",1]', '[[]]', 'nope', '"ab"']) {
      expectViolation('request', record(RecordKind.TRAILERS, payload));
      expectViolation('response', Buffer.concat([head, record(RecordKind.TRAILERS, payload)]));
    }
  });

  test('the error is kept: every later push throws it again', () => {
    const collector = new Collector('request');
    const first = expectEnvelopeError(() => collector.decoder.push(head));
    const again = expectEnvelopeError(() => collector.decoder.push(bodyRecord));
    assert.equal(again, first);
    assert.equal(
      expectEnvelopeError(() => collector.decoder.finish()),
      first,
    );
    assert.deepEqual(collector.events, []);
  });

  test('records before the violation are delivered', () => {
    const collector = new Collector('response');
    expectEnvelopeError(() => collector.decoder.push(Buffer.concat([head, bodyRecord, head])));
    assert.deepEqual(collector.normalized(), [
      ['head', HEAD_200],
      ['body', Buffer.from('x')],
    ]);
  });
});

describe('finish', () => {
  test('FIN inside a record header or payload', () => {
    const bytes = body(Buffer.from('abcdef'));
    for (let cut = 1; cut < bytes.length; cut++) {
      const { decoder } = new Collector('request');
      decoder.push(bytes.subarray(0, cut));
      expectEnvelopeError(() => decoder.finish(), /FIN inside a record/);
      expectEnvelopeError(() => decoder.push(bytes.subarray(cut)), /FIN inside a record/);
    }
    const head = encodeHead(HEAD_200);
    const { decoder } = new Collector('response');
    decoder.push(head.subarray(0, head.length - 1));
    expectEnvelopeError(() => decoder.finish(), /FIN inside a record of kind 0x1 with 1 bytes missing/);
  });

  test('response FIN without a final HEAD', () => {
    expectViolation('response', Buffer.alloc(0), /FIN before the final HEAD/);
    expectViolation('response', encodeHead(HEAD_100), /FIN before the final HEAD/);
    expectViolation(
      'response',
      Buffer.concat([encodeHead(HEAD_100), encodeHead({ status: 103, headers: [] })]),
    );
  });

  test('request FIN at any boundary is fine', () => {
    for (const bytes of [Buffer.alloc(0), body(Buffer.from('a')), encodeTrailers([])]) {
      const { decoder } = new Collector('request');
      decoder.push(bytes);
      decoder.finish();
    }
  });
});

describe('fuzz', () => {
  const chunkSizes = fc.array(fc.oneof(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 512 })), {
    minLength: 1,
    maxLength: 6,
  });
  const plausibleHeader = fc
    .record({
      kind: fc.constantFrom(0, 1, 1, 2, 2, 3, 3, 4),
      length: fc.oneof(
        fc.integer({ min: 0, max: 48 }),
        fc.constantFrom(MAX_HEAD_PAYLOAD, MAX_HEAD_PAYLOAD + 1, MAX_BODY_PAYLOAD, MAX_BODY_PAYLOAD + 1),
      ),
    })
    .map(({ kind, length }) => {
      const header = Buffer.alloc(RECORD_HEADER_SIZE);
      header[0] = kind;
      header.writeUInt32BE(length, 1);
      return new Uint8Array(header);
    });
  const validRecord = fc.oneof(
    fc.integer({ min: 100, max: 999 }).map((status) => encodeHead({ status, headers: ['A', 'b'] })),
    fc.uint8Array({ minLength: 1, maxLength: 32 }).map((bytes) => body(Buffer.from(bytes))),
    fc.constant(encodeTrailers(['A', 'b'])),
  );
  const soup = fc.oneof(
    fc.uint8Array({ maxLength: 1024 }),
    fc
      .array(fc.oneof(plausibleHeader, validRecord, fc.uint8Array({ maxLength: 24 })), { maxLength: 12 })
      .map((parts) => Buffer.concat(parts)),
  );

  test('arbitrary bytes in arbitrary chunks only ever yield an EnvelopeError', () => {
    fc.assert(
      fc.property(
        fc.constantFrom<[Direction, EnvelopeOptions]>(
          ['request', {}],
          ['response', {}],
          ['request', { raw: true }],
        ),
        soup,
        chunkSizes,
        fc.boolean(),
        ([direction, options], bytes, sizes, fin) => {
          const { decoder } = new Collector(direction, options);
          try {
            for (const chunk of chunked(Buffer.from(bytes), sizes)) decoder.push(chunk);
            if (fin) decoder.finish();
          } catch (err) {
            assert.ok(err instanceof EnvelopeError, String(err));
          }
        },
      ),
      { numRuns: 300, seed: 0xe4e102 },
    );
  });
});
