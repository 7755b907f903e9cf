// The compact forms of docs/http-over-streams.md ("Compact forms"): the SYN metadata of http and
// upgrade streams, and the COMPACT_HEAD record. Round trips over arbitrary strings (NUL and bytes above
// 0x7f included), every malformation a hostile peer could send, and the handshake's agreement: a side
// that did not offer the cap (an older agent or controller) sees JSON only.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { ProtocolError } from '../../src/errors.js';
import { encodeSynFrame, FrameDecoder } from '../../src/protocol/codec.js';
import { ErrorCode, FrameType } from '../../src/protocol/constants.js';
import {
  COMPACT_CAP,
  compactSynCodec,
  decodeCompactMeta,
  encodeCompactMeta,
} from '../../src/proxy/compact.js';
import {
  encodeCompactHead,
  encodeHead,
  EnvelopeDecoder,
  EnvelopeError,
  type ResponseHead,
} from '../../src/proxy/envelope.js';
import {
  COMPACT_HEADS,
  type HttpStreamMeta,
  parseStreamMeta,
  wantsCompactHeads,
} from '../../src/proxy/meta.js';
import { Session } from '../../src/tunnel/session.js';
import type { Stream } from '../../src/tunnel/stream.js';
import { duplexPair } from '../helpers/duplex-pair.js';
import { RawPeer } from '../helpers/raw-peer.js';
import { EVENT_MS, within } from '../helpers/wait.js';

const byteString = fc
  .array(fc.integer({ min: 0, max: 255 }), { maxLength: 40 })
  .map((codes) => String.fromCharCode(...codes));
// Any valid UTF-16: astral characters as surrogate pairs, never a lone surrogate.
const anyText = fc.string({ unit: 'binary', maxLength: 40 });
const headerList = fc
  .array(fc.tuple(byteString, byteString), { maxLength: 120 })
  .map((pairs) => pairs.flat());

const metaArb = fc
  .record({
    kind: fc.constantFrom('http' as const, 'upgrade' as const),
    target: anyText,
    client: anyText,
    requestId: anyText,
    method: anyText,
    path: anyText,
    version: anyText,
    headers: headerList,
    chunked: fc.boolean(),
    serverName: fc.option(anyText, { nil: undefined }),
    compactHeads: fc.boolean(),
  })
  .map((r) => {
    const meta: HttpStreamMeta = {
      kind: r.kind,
      target: r.target,
      client: r.client,
      requestId: r.requestId,
      head: { method: r.method, path: r.path, version: r.version, headers: r.headers },
    };
    if (r.chunked) meta.head.chunked = true;
    if (r.serverName !== undefined) meta.serverName = r.serverName;
    if (r.compactHeads) meta[COMPACT_HEADS] = true;
    return meta;
  });

function sample(): HttpStreamMeta {
  return {
    kind: 'http',
    target: 'http://web.shop.svc.cluster.local:8080',
    client: '203.0.113.9:51234',
    requestId: '01J9ZREQ',
    head: {
      method: 'POST',
      path: '/api/orders?x=1',
      version: '1.1',
      headers: ['Host', 'shop.example.test', 'X-Bytes', 'caf\xe9 \xff'],
    },
  };
}

function payloadOf(meta: HttpStreamMeta): Buffer {
  const payload = encodeCompactMeta(meta as unknown as Record<string, unknown>);
  assert.ok(payload !== null);
  return payload;
}

function refused(payload: Buffer, pattern: RegExp): void {
  assert.throws(
    () => decodeCompactMeta(payload),
    (err: unknown) => err instanceof ProtocolError && pattern.test(err.message),
  );
}

describe('compact SYN metadata', () => {
  test('decodes to the object it was made from, for any strings', () => {
    fc.assert(
      fc.property(metaArb, (meta) => {
        const back = decodeCompactMeta(payloadOf(meta));
        assert.deepEqual(back, { ...meta });
        assert.equal(wantsCompactHeads(back), wantsCompactHeads(meta));
      }),
      { numRuns: 300 },
    );
  });

  test('a real request passes the same checks as JSON, NUL and bytes above 0x7f carried as they are', () => {
    const meta = sample();
    const back = decodeCompactMeta(payloadOf(meta));
    assert.deepEqual(parseStreamMeta(back), { ok: true, meta: back });
    assert.deepEqual(back, meta);
    const nul = sample();
    nul.head.headers.push('X-Nul', 'a\0b');
    const decoded = decodeCompactMeta(payloadOf(nul)) as unknown as HttpStreamMeta;
    assert.deepEqual(decoded.head.headers.slice(-2), ['X-Nul', 'a\0b']);
    // The agent's check refuses the NUL, as it refuses it in JSON: the form does not change the rules.
    assert.equal(parseStreamMeta(decoded).ok, false);
  });

  test('10,000 header fields, the most the agent takes, and the last one intact', () => {
    const meta = sample();
    meta.head.headers = [];
    for (let i = 0; i < 10_000; i++) meta.head.headers.push(`X-H${i}`, `v${i}`);
    const back = decodeCompactMeta(payloadOf(meta)) as unknown as HttpStreamMeta;
    assert.equal(back.head.headers.length, 20_000);
    assert.deepEqual(back.head.headers.slice(-2), ['X-H9999', 'v9999']);
    assert.equal(parseStreamMeta(back).ok, true);
  });

  test('what the form does not hold goes as JSON: other kinds, a string over 65,535', () => {
    assert.equal(
      encodeCompactMeta({ kind: 'tcp', target: 'tcp://db:5432', client: 'c', requestId: 'r' }),
      null,
    );
    const long = sample();
    long.head.path = `/${'a'.repeat(70_000)}`;
    assert.equal(encodeCompactMeta(long as unknown as Record<string, unknown>), null);
  });

  test('metadata of another shape goes as JSON: unknown keys, values that are not strings', () => {
    type Loose = Record<string, unknown> & { head: Record<string, unknown> & { headers: unknown } };
    const variants: ((m: Loose) => void)[] = [
      (m) => (m.requestId = 5),
      (m) => (m.x = 'new field'),
      (m) => (m.head.priority = 'u=1'),
      (m) => (m.head.chunked = 'yes'),
      (m) => (m.serverName = null),
      (m) => delete (m as Partial<Loose>).head,
      (m) => (m.head.headers as unknown[]).push('X-N', 7),
      (m) => (m.head.headers = 'A: b'),
    ];
    for (const change of variants) {
      const m = sample() as unknown as Loose;
      change(m);
      assert.equal(encodeCompactMeta(m), null, String(change));
    }
  });

  test('a hostile payload is a protocol error, never a wrong object', () => {
    const good = payloadOf(sample());
    refused(good.subarray(0, 4), /shorter than its header/);
    refused(Buffer.concat([Buffer.from([0x02]), good.subarray(1)]), /unknown format/);
    const kind = Buffer.from(good);
    kind[1] = 3;
    refused(kind, /unknown kind/);
    const flags = Buffer.from(good);
    flags[2] = 0x8;
    refused(flags, /unknown flags/);
    const few = Buffer.from(good);
    few.writeUInt16BE(5, 3);
    refused(few, /5 strings/);
    const many = Buffer.from(good);
    many.writeUInt16BE(60_000, 3);
    refused(many, /60000 strings/);
    // The first length one longer, then one shorter: the strings no longer add up.
    for (const delta of [1, -1]) {
      const bad = Buffer.from(good);
      bad.writeUInt16BE(bad.readUInt16BE(5) + delta, 5);
      refused(bad, /lengths do not match/);
    }
    refused(Buffer.concat([good, Buffer.from('x')]), /lengths do not match/);
    // Invalid UTF-8 decodes to replacement characters, whose count does not match the table.
    const utf8 = Buffer.from(good);
    utf8[utf8.length - 1] = 0xff;
    utf8[utf8.length - 2] = 0xfe;
    assert.throws(() => {
      const m = decodeCompactMeta(utf8) as unknown as HttpStreamMeta;
      // Or, where the count happens to match, the agent's check refuses the character.
      if (!parseStreamMeta(m).ok) throw new ProtocolError('refused by the check');
    }, ProtocolError);
  });
});

function decodeHeads(bytes: Buffer, step = bytes.length): { heads: ResponseHead[]; body: Buffer[] } {
  const heads: ResponseHead[] = [];
  const body: Buffer[] = [];
  const decoder = new EnvelopeDecoder('response', {
    onHead: (h) => heads.push(h),
    onBody: (p) => body.push(Buffer.from(p)),
    onTrailers: () => {},
  });
  for (let off = 0; off < bytes.length; off += step) decoder.push(bytes.subarray(off, off + step));
  decoder.finish();
  return { heads, body };
}

function bodyRecord(text: string): Buffer {
  const b = Buffer.from(text);
  const h = Buffer.alloc(5);
  h[0] = 0x2;
  h.writeUInt32BE(b.length, 1);
  return Buffer.concat([h, b]);
}

describe('COMPACT_HEAD records', () => {
  test('from buffers and from byte strings alike, and decoded to the head they carry', () => {
    // 101 is left out: it switches the decoder to raw bytes, which only an upgrade's may.
    const statuses = fc.integer({ min: 100, max: 999 }).filter((s) => s !== 101);
    fc.assert(
      fc.property(statuses, byteString, headerList, (status, text, headers) => {
        const fromStrings = encodeCompactHead(status, text, headers);
        const fromBuffers = encodeCompactHead(
          status,
          text,
          headers.map((h) => Buffer.from(h, 'latin1')),
        );
        assert.deepEqual(fromBuffers, fromStrings);
        // A final head, so that the decoder's order holds whatever the status; a 1xx is interim.
        const final =
          status >= 200 ? fromStrings : Buffer.concat([fromStrings, encodeCompactHead(200, '', [])]);
        const { heads } = decodeHeads(final);
        assert.deepEqual(heads[0], { status, statusText: text, headers });
      }),
      { numRuns: 300 },
    );
  });

  test('interim and final heads, compact and JSON mixed, byte by byte, then the body', () => {
    const bytes = Buffer.concat([
      encodeCompactHead(103, 'Early Hints', ['Link', '</a.css>; rel=preload']),
      encodeHead({ status: 102, headers: [] }),
      encodeCompactHead(200, 'OK', [Buffer.from('X-B'), Buffer.from([0x00, 0x80, 0xff])]),
      bodyRecord('hello'),
    ]);
    const { heads, body } = decodeHeads(bytes, 1);
    assert.deepEqual(
      heads.map((h) => h.status),
      [103, 102, 200],
    );
    assert.deepEqual(heads[2]!.headers, ['X-B', '\x00\x80\xff']);
    assert.equal(Buffer.concat(body).toString(), 'hello');
  });

  test('out of order or in the request direction: an envelope error', () => {
    const head = encodeCompactHead(200, 'OK', []);
    assert.throws(() => decodeHeads(Buffer.concat([head, head])), /COMPACT_HEAD record after the final HEAD/);
    assert.throws(() => decodeHeads(Buffer.concat([head, encodeHead({ status: 200, headers: [] })])));
    const request = new EnvelopeDecoder('request', { onBody: () => {}, onTrailers: () => {} });
    assert.throws(() => request.push(head), /COMPACT_HEAD record in the request direction/);
  });

  test('a hostile head is an envelope error', () => {
    const good = encodeCompactHead(200, 'OK', ['A', 'b']);
    const mutate = (at: number, value: number): Buffer => {
      const bad = Buffer.from(good);
      bad.writeUInt16BE(value, 5 + at);
      return bad;
    };
    const cases: [Buffer, RegExp][] = [
      [mutate(0, 99), /status is not an integer/],
      [mutate(0, 1000), /status is not an integer/],
      [mutate(2, 2), /2 strings/],
      [mutate(2, 0), /0 strings/],
      [mutate(2, 999), /999 strings/],
      [mutate(4, 3), /lengths do not match/],
      [mutate(4, 1), /lengths do not match/],
    ];
    for (const [bytes, pattern] of cases) {
      assert.throws(
        () => decodeHeads(bytes),
        (err: unknown) => err instanceof EnvelopeError && pattern.test(err.message),
        pattern.source,
      );
    }
    // Shorter than status, count and one length: refused from the record header alone.
    const tiny = Buffer.from([0x4, 0, 0, 0, 5, 0, 200, 0, 1, 0]);
    assert.throws(() => decodeHeads(tiny), /COMPACT_HEAD record with length 5 outside 6\.\.65536/);
  });

  test('text that is not bytes goes as a JSON HEAD, never with its characters cut to a byte', () => {
    for (const [text, fields] of [
      ['\ufffd', [Buffer.from('X-A'), Buffer.from('1')]],
      ['OK', ['X-A', 'caf\u00e9 \u20ac']],
    ] as const) {
      const rec = encodeCompactHead(200, text, fields);
      assert.equal(rec[0], 0x1, 'a JSON HEAD record');
      const { heads } = decodeHeads(rec);
      assert.equal(heads[0]!.statusText, text);
      assert.deepEqual(
        heads[0]!.headers,
        fields.map((f) => (typeof f === 'string' ? f : f.toString('latin1'))),
      );
    }
  });

  test('the encoder refuses what a decoder would', () => {
    assert.throws(() => encodeCompactHead(99, '', []), RangeError);
    assert.throws(() => encodeCompactHead(200, '', ['odd']), RangeError);
    assert.throws(() => encodeCompactHead(200, '', ['X', 'v'.repeat(70_000)]), RangeError);
  });
});

/** Frames the client side of `transport` writes, read off the same bytes the server session reads. */
function tapFrames(b: import('node:stream').Duplex): { type: number; payload: Buffer }[] {
  const frames: { type: number; payload: Buffer }[] = [];
  const decoder = new FrameDecoder((type, _flags, _id, payload) =>
    frames.push({ type, payload: Buffer.from(payload) }),
  );
  b.on('data', (chunk: Buffer) => decoder.push(chunk));
  return frames;
}

async function openOne(clientCodec: boolean, serverCap: boolean, meta: Record<string, unknown>) {
  const { a, b } = duplexPair();
  const wire = tapFrames(b);
  let arrived: (s: Stream) => void = () => {};
  const got = new Promise<Stream>((resolve) => (arrived = resolve));
  const accepting = Session.accept(b, {
    authenticate: () => ({ ok: true }),
    ...(serverCap ? { caps: [COMPACT_CAP] } : {}),
    synCodec: compactSynCodec,
    onStream: (s) => {
      s.on('error', () => {});
      arrived(s);
    },
  });
  const client = await within(
    Session.connect(a, {
      hello: { token: 't', agent: 'a', replica: 'r', caps: clientCodec ? [COMPACT_CAP] : [] },
      ...(clientCodec ? { synCodec: compactSynCodec } : {}),
    }),
    EVENT_MS,
    'the session to open',
  );
  const server = await within(accepting, EVENT_MS, 'the server session');
  try {
    client.open(meta).on('error', () => {});
    const stream = await within(got, EVENT_MS, 'the stream to arrive');
    const syn = wire.find((f) => f.type === FrameType.SYN)!;
    return { first: syn.payload[0], meta: stream.meta, caps: client.peer!.caps };
  } finally {
    client.destroy();
    server.destroy();
  }
}

describe('the handshake agrees on the compact form', () => {
  const meta = (): Record<string, unknown> => {
    const m = sample();
    m[COMPACT_HEADS] = true;
    return m as unknown as Record<string, unknown>;
  };

  test('both sides offer it: the SYN is compact and arrives as the same metadata, mark and all', async () => {
    const r = await openOne(true, true, meta());
    assert.deepEqual(r.caps, [COMPACT_CAP]);
    assert.equal(r.first, 0x01);
    assert.deepEqual(r.meta, meta());
    assert.equal(wantsCompactHeads(r.meta), true);
  });

  test('an older controller, which does not echo the cap: JSON, and no mark', async () => {
    const r = await openOne(true, false, meta());
    assert.deepEqual(r.caps, []);
    assert.equal(r.first, '{'.charCodeAt(0));
    assert.deepEqual(r.meta, { ...sample() });
    assert.equal(wantsCompactHeads(r.meta), false);
  });

  test('an older agent, which does not offer it: JSON', async () => {
    const r = await openOne(false, true, meta());
    assert.equal(r.first, '{'.charCodeAt(0));
    assert.equal(wantsCompactHeads(r.meta), false);
  });

  test('a tcp stream on a compact session still goes as JSON', async () => {
    const tcp = { kind: 'tcp', target: 'tcp://db:5432', client: '203.0.113.9:1', requestId: 'r' };
    const r = await openOne(true, true, tcp);
    assert.equal(r.first, '{'.charCodeAt(0));
    assert.deepEqual(r.meta, tcp);
  });

  test('metadata relayed as JSON (a fleet peer) loses the mark, so its heads stay JSON', () => {
    const relayed = JSON.parse(JSON.stringify(meta())) as Record<string, unknown>;
    const back = decodeCompactMeta(encodeCompactMeta(relayed)!);
    assert.equal(wantsCompactHeads(back), false);
  });

  test('a compact SYN on a session that never agreed to it ends the session with PROTOCOL_ERROR', async () => {
    const { a, b } = duplexPair();
    const raw = new RawPeer(a);
    const accepting = Session.accept(b, { authenticate: () => ({ ok: true }), onStream: () => {} });
    await raw.hello();
    const session = await within(accepting, EVENT_MS, 'the session to open');
    const payload = payloadOf(sample());
    raw.send(encodeSynFrame(1, payload));
    const goAway = await raw.next(FrameType.GO_AWAY);
    assert.equal(goAway.payload.readUInt32BE(0), ErrorCode.PROTOCOL_ERROR);
    session.destroy();
  });
});
