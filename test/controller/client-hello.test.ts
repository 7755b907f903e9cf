// The ClientHello reader that TLS passthrough routes by: hellos captured from Node's tls.connect and
// from `openssl s_client`, hand-made ones for each way a hello can be malformed, and properties: any
// split of the bytes gives the same answer, and no input throws.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer, type Socket } from 'node:net';
import { connect } from 'node:tls';
import { before, describe, test } from 'node:test';
import fc from 'fast-check';
import { MAX_HELLO_BYTES, parseClientHello, type HelloResult } from '../../src/controller/client-hello.js';
import { EVENT_MS, within } from '../helpers/wait.js';

/** The bytes a client sends first, read until they hold a whole hello (or something that is none). */
async function capture(dial: (port: number) => () => void): Promise<Buffer> {
  let stop: (() => void) | undefined;
  let socket: Socket | undefined;
  const server = createServer();
  try {
    const got = new Promise<Buffer>((resolve) => {
      server.on('connection', (s) => {
        socket = s;
        const chunks: Buffer[] = [];
        s.on('error', () => {});
        s.on('data', (chunk: Buffer) => {
          chunks.push(chunk);
          const all = Buffer.concat(chunks);
          if (parseClientHello(all).kind !== 'more') resolve(all);
        });
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    stop = dial((server.address() as { port: number }).port);
    return await within(got, EVENT_MS, 'a ClientHello');
  } finally {
    stop?.();
    socket?.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
}

function nodeHello(servername: string | undefined): Promise<Buffer> {
  return capture((port) => {
    const client = connect({ port, host: '127.0.0.1', ...(servername === undefined ? {} : { servername }) });
    client.on('error', () => {});
    return () => client.destroy();
  });
}

function opensslHello(args: string[]): Promise<Buffer> {
  return capture((port) => {
    const child = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, ...args], {
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    child.on('error', () => {});
    return () => child.kill('SIGKILL');
  });
}

// A ClientHello built by hand (RFC 8446 §4.1.2), its extensions given whole.
function clientHello(extensions: Buffer[] | undefined): Buffer {
  const body = Buffer.concat([
    Buffer.from([3, 3]),
    Buffer.alloc(32, 7),
    Buffer.from([0]), // no session id
    Buffer.from([0, 2, 0x13, 0x01]),
    Buffer.from([1, 0]),
    ...(extensions === undefined ? [] : [vector(2, Buffer.concat(extensions))]),
  ]);
  return Buffer.concat([Buffer.from([1]), uint24(body.length), body]);
}

function serverNameExtension(...names: (string | Buffer)[]): Buffer {
  const list = names.map((n) => Buffer.concat([Buffer.from([0]), vector(2, Buffer.from(n))]));
  return extension(0, vector(2, Buffer.concat(list)));
}

function extension(type: number, body: Buffer): Buffer {
  return Buffer.concat([uint16(type), vector(2, body)]);
}

/** `message` in handshake records of at most `size` bytes each. */
function records(message: Buffer, size = 1 << 14, type = 0x16): Buffer {
  const out: Buffer[] = [];
  for (let at = 0; at < message.length; at += size) {
    const part = message.subarray(at, at + size);
    out.push(Buffer.from([type, 3, 1]), uint16(part.length), part);
  }
  return Buffer.concat(out);
}

function vector(lengthBytes: 1 | 2, body: Buffer): Buffer {
  return Buffer.concat([lengthBytes === 1 ? Buffer.from([body.length]) : uint16(body.length), body]);
}

function uint16(n: number): Buffer {
  return Buffer.from([n >> 8, n & 0xff]);
}

function uint24(n: number): Buffer {
  return Buffer.from([n >> 16, (n >> 8) & 0xff, n & 0xff]);
}

/** The answer once every chunk has been read, asserting that each earlier prefix needed more. */
function fed(chunks: readonly Buffer[]): HelloResult {
  let so = Buffer.alloc(0);
  let result: HelloResult = { kind: 'more' };
  for (const chunk of chunks) {
    assert.equal(result.kind, 'more', 'an answer before the last chunk');
    so = Buffer.concat([so, chunk]);
    result = parseClientHello(so);
  }
  return result;
}

function invalid(bytes: Buffer): string {
  const result = parseClientHello(bytes);
  assert.equal(result.kind, 'invalid', `expected invalid, got ${JSON.stringify(result)}`);
  return (result as { reason: string }).reason;
}

const SNI = (sni: string | null): HelloResult => ({ kind: 'hello', sni });

describe('parseClientHello: real clients', () => {
  const hellos = new Map<string, Buffer>();
  before(async () => {
    hellos.set('node', await nodeHello('db.example.test'));
    hellos.set('node, no name', await nodeHello(undefined));
    hellos.set('openssl', await opensslHello(['-servername', 'Db.Example.Test']));
    hellos.set('openssl, no name', await opensslHello(['-noservername']));
  });

  test("Node's tls.connect: the name it sent", () => {
    assert.deepEqual(parseClientHello(hellos.get('node')!), SNI('db.example.test'));
  });

  test("Node's tls.connect to an address sends no name", () => {
    assert.deepEqual(parseClientHello(hellos.get('node, no name')!), SNI(null));
  });

  test('openssl s_client -servername: the name, lowercased', () => {
    assert.deepEqual(parseClientHello(hellos.get('openssl')!), SNI('db.example.test'));
  });

  test('openssl s_client -noservername: none', () => {
    assert.deepEqual(parseClientHello(hellos.get('openssl, no name')!), SNI(null));
  });

  test('every proper prefix needs more', () => {
    for (const [who, hello] of hellos) {
      for (let n = 0; n < hello.length; n++) {
        assert.equal(parseClientHello(hello.subarray(0, n)).kind, 'more', `${who}, ${n} bytes`);
      }
    }
  });

  test('property: any split into chunks gives the same answer', () => {
    const all = [...hellos.values()];
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: all.length - 1 }),
        fc.uniqueArray(fc.integer({ min: 1, max: 2000 }), { maxLength: 20 }),
        (which, cuts) => {
          const hello = all[which]!;
          const points = [0, ...cuts.filter((c) => c < hello.length).sort((a, b) => a - b), hello.length];
          const chunks = points.slice(1).map((end, i) => hello.subarray(points[i], end));
          assert.deepEqual(fed(chunks), parseClientHello(hello));
        },
      ),
      { numRuns: 300 },
    );
  });

  test('the same hello re-framed in small records: the same answer', () => {
    for (const [who, hello] of hellos) {
      const message = hello.subarray(5, 5 + hello.readUInt16BE(3));
      for (const size of [1, 2, 3, 7, 100]) {
        assert.deepEqual(
          parseClientHello(records(message, size)),
          parseClientHello(hello),
          `${who} by ${size}`,
        );
      }
    }
  });

  test('property: a changed byte never throws, and bytes after the hello change nothing', () => {
    const all = [...hellos.values()];
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: all.length - 1 }),
        fc.nat(),
        fc.integer({ min: 0, max: 255 }),
        fc.uint8Array({ maxLength: 64 }),
        (which, at, byte, tail) => {
          const hello = Buffer.from(all[which]!);
          assert.deepEqual(parseClientHello(Buffer.concat([hello, tail])), parseClientHello(hello));
          hello[at % hello.length] = byte;
          const result = parseClientHello(hello);
          assert.ok(['more', 'hello', 'invalid'].includes(result.kind));
        },
      ),
      { numRuns: 1000 },
    );
  });
});

describe('parseClientHello: hand-made hellos', () => {
  test('a hello spanning two records', () => {
    const message = clientHello([extension(10, Buffer.alloc(40)), serverNameExtension('a.example.test')]);
    assert.deepEqual(parseClientHello(records(message, 30)), SNI('a.example.test'));
  });

  test('no extensions at all, or none named server_name: no name', () => {
    assert.deepEqual(parseClientHello(records(clientHello(undefined))), SNI(null));
    assert.deepEqual(parseClientHello(records(clientHello([extension(10, Buffer.alloc(4))]))), SNI(null));
  });

  test('garbage is refused at its first byte', () => {
    assert.equal(invalid(Buffer.from('G')), 'not a TLS handshake record');
    assert.equal(invalid(Buffer.from('GET / HTTP/1.1\r\n')), 'not a TLS handshake record');
    // An SSLv2-compatible hello (its first byte has the high bit set) is no TLS record.
    assert.equal(invalid(Buffer.from([0x80, 0x2e, 0x01])), 'not a TLS handshake record');
  });

  test('records that cannot carry a ClientHello', () => {
    const message = clientHello([serverNameExtension('a.example.test')]);
    assert.equal(invalid(records(message, 1 << 14, 0x15)), 'not a TLS handshake record');
    assert.equal(invalid(Buffer.from([0x16, 2, 0, 0, 1])), 'not a TLS record version');
    assert.equal(invalid(Buffer.from([0x16, 3, 1, 0, 0])), 'an empty handshake record');
    assert.equal(invalid(Buffer.from([0x16, 3, 1, 0x40, 0x01])), 'a record longer than 2^14 bytes');
    const split = records(message, 20);
    const alert = Buffer.concat([split.subarray(0, 25), Buffer.from([0x15, 3, 1, 0, 2, 1, 0])]);
    assert.equal(invalid(alert), 'a non-handshake record interrupts the ClientHello');
    const serverHello = Buffer.from(message);
    serverHello[0] = 2;
    assert.equal(invalid(records(serverHello)), 'the first handshake message is not a ClientHello');
  });

  test('a hello longer than 16 KiB is refused once its header says so', () => {
    const big = clientHello([extension(21, Buffer.alloc(MAX_HELLO_BYTES))]);
    assert.equal(invalid(records(big).subarray(0, 9)), 'the ClientHello is longer than 16 KiB');
  });

  test('a stream of tiny records that never completes is refused at 16 KiB', () => {
    const big = clientHello([extension(21, Buffer.alloc(MAX_HELLO_BYTES / 2))]);
    const framed = records(big, 1);
    assert.equal(parseClientHello(framed.subarray(0, MAX_HELLO_BYTES - 1)).kind, 'more');
    assert.equal(invalid(framed.subarray(0, MAX_HELLO_BYTES)), 'no whole ClientHello within 16 KiB');
  });

  test('malformed server names', () => {
    const hello = (...ext: Buffer[]): Buffer => records(clientHello(ext));
    assert.equal(invalid(hello(serverNameExtension('a.test', 'b.test'))), 'two host names');
    assert.equal(
      invalid(hello(serverNameExtension('bad_name.test'))),
      'a server name that is not a hostname',
    );
    assert.equal(invalid(hello(serverNameExtension('a.test.'))), 'a server name that is not a hostname');
    assert.equal(
      invalid(hello(serverNameExtension(Buffer.from([0xc3, 0xa9])))),
      'a server name that is not a hostname',
    );
    assert.equal(invalid(hello(extension(0, Buffer.alloc(0)))), 'a malformed server_name extension');
    assert.equal(
      invalid(hello(extension(0, Buffer.from([0, 5, 0, 0])))),
      'a malformed server_name extension',
    );
    assert.equal(invalid(hello(extension(0, Buffer.from([0, 2, 0, 0])))), 'a truncated server name');
    const twice = hello(serverNameExtension('a.test'), serverNameExtension('a.test'));
    assert.equal(invalid(twice), 'extension 0 appears twice');
  });

  test('the name is lowercased', () => {
    assert.deepEqual(
      parseClientHello(records(clientHello([serverNameExtension('DB.Example.TEST')]))),
      SNI('db.example.test'),
    );
  });

  test('a hello whose fields overrun it', () => {
    const message = clientHello([serverNameExtension('a.test')]);
    const cut = (n: number): Buffer => {
      const body = message.subarray(4, 4 + n);
      return records(Buffer.concat([Buffer.from([1]), uint24(body.length), body]));
    };
    assert.equal(invalid(cut(20)), 'the ClientHello ends inside its random');
    assert.equal(invalid(cut(34)), 'the ClientHello ends inside session id');
    assert.equal(invalid(cut(37)), 'the ClientHello ends inside cipher suites');
    assert.equal(invalid(cut(39)), 'the ClientHello ends inside compression methods');
    const extra = Buffer.concat([message, Buffer.from([0])]);
    extra.writeUIntBE(extra.length - 4, 1, 3);
    assert.equal(invalid(records(extra)), 'bytes after the extensions');
  });

  test('property: random bytes never throw', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.boolean(), (bytes, framed) => {
        const input = framed
          ? records(Buffer.concat([Buffer.from([1, 0, 0, bytes.length]), bytes]))
          : Buffer.from(bytes);
        const result = parseClientHello(input);
        assert.ok(['more', 'hello', 'invalid'].includes(result.kind));
      }),
      { numRuns: 2000 },
    );
  });
});
