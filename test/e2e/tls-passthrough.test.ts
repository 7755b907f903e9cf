// TLS passthrough by SNI (issue #15), with real clients against a real controller and agent: a route
// `tls: passthrough` to a target that is a TLS server with the customer's own certificate, and a
// terminated host beside it on the one TLS port.
// - openssl s_client -servername db.example.test sees the target's certificate; the terminated host
//   sees Sluice's, and curl gets its 200 over it;
// - bytes echo through passthrough, the client's FIN passes as a FIN, and a client that leaves
//   mid-way closes the target's connection;
// - a ClientHello written one byte at a time still routes; a hello with no SNI gets Sluice's default
//   certificate; garbage is closed without reaching the target; a silent client, or one that stops
//   in the middle of its hello, is closed after tls.peekTimeout;
// - a drain lets a passthrough connection go on for the grace period, then ends it with a FIN;
// - the second and the tenth passthrough connection at once each echo their own bytes;
// - a plain HTTP request for the passthrough host matches no route.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import {
  connect as tlsConnect,
  createServer as createTlsServer,
  type Server,
  type TLSSocket,
} from 'node:tls';
import type { Server as NetServer } from 'node:net';
import { issueCert, type IssuedCert, makeTestCerts, type TestCerts } from '../helpers/certs.js';
import { listenOnLoopback } from '../helpers/listen.js';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { ask, Stack, tempDir } from '../helpers/sluice-procs.js';
import { EVENT_MS, scaled, waitFor, within } from '../helpers/wait.js';

const OPENSSL = '/usr/bin/openssl';
const CURL = '/usr/bin/curl';
const PASS = 'db.example.test';
const PEEK_MS = 3000;
const GRACE_MS = 2000;

let ca: TestCerts;
let origin: Origin;
let stack: Stack;
let target: Server;
let targetCert: IssuedCert;
let tlsPort = 0;
/** Connections the target accepted, at the TCP level (whatever their TLS did). */
let targetConnections = 0;
/** Target connections closed. */
let targetClosed = 0;

function run(file: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(file, args, { timeout: scaled(EVENT_MS) }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : Number((err as { code?: unknown }).code ?? -1), stdout, stderr }),
    );
    child.stdin?.end('');
  });
}

/** The subject CN that `openssl s_client` sees on the TLS port for `servername` (none: no SNI). */
async function presented(servername?: string): Promise<string> {
  const sni = servername === undefined ? ['-noservername'] : ['-servername', servername];
  const r = await run(OPENSSL, ['s_client', '-connect', `127.0.0.1:${tlsPort}`, ...sni]);
  const subject = /^subject=.*?CN ?= ?([^,\n]+)/m.exec(r.stdout)?.[1];
  if (subject === undefined)
    throw new Error(`no certificate in: ${r.stdout.slice(0, 400)} ${r.stderr.slice(0, 400)}`);
  return subject.trim();
}

/** A TLS connection through the TLS port to the passthrough host, checked against the test CA. */
async function passthrough(socket?: Duplex): Promise<TLSSocket> {
  const client = tlsConnect({
    ...(socket === undefined ? { port: tlsPort, host: '127.0.0.1' } : { socket }),
    servername: PASS,
    ca: ca.ca,
  });
  await within(once(client, 'secureConnect'), EVENT_MS, 'the TLS handshake with the target');
  return client;
}

/** Writes `data` and reads until `data.length` bytes came back. */
async function echo(client: TLSSocket, data: Buffer): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let got = 0;
  const done = new Promise<void>((resolve, reject) => {
    client.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      got += chunk.length;
      if (got >= data.length) resolve();
    });
    client.once('close', () => reject(new Error(`closed after ${got} of ${data.length} bytes`)));
  });
  client.write(data);
  await within(done, EVENT_MS, `${data.length} bytes echoed`);
  return Buffer.concat(chunks);
}

/** A raw TCP connection to the TLS port, and a promise of its close. */
async function raw(): Promise<{ socket: Socket; closed: Promise<unknown>; received: Buffer[] }> {
  const socket = netConnect(tlsPort, '127.0.0.1');
  socket.setNoDelay(true);
  socket.on('error', () => {});
  const received: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => received.push(chunk));
  // Not once(): that rejects on the 'error' a reset brings before the close.
  const closed = new Promise((resolve) => socket.once('close', resolve));
  await within(once(socket, 'connect'), EVENT_MS, 'a TCP connection to the TLS port');
  return { socket, closed, received };
}

/**
 * A Duplex that a TLS client can run over, writing each byte to a raw socket on its own, with a turn
 * of the event loop in between: the ClientHello leaves in one-byte segments (Nagle is off).
 */
function byteByByte(socket: Socket): Duplex {
  const duplex = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk: Buffer, _encoding, callback) {
      void (async () => {
        for (let i = 0; i < chunk.length; i++) {
          if (!socket.write(chunk.subarray(i, i + 1))) await once(socket, 'drain');
          await new Promise((resolve) => setImmediate(resolve));
        }
      })().then(() => callback(), callback);
    },
    final(callback) {
      socket.end();
      callback();
    },
  });
  socket.on('data', (chunk: Buffer) => {
    if (!duplex.push(chunk)) socket.pause();
  });
  socket.on('end', () => duplex.push(null));
  socket.on('close', () => duplex.destroy());
  return duplex;
}

before(async () => {
  ca = await makeTestCerts();
  const dir = tempDir();
  const sluiceDefault = await issueCert(['default.sluice.test'], {
    dir,
    file: 'default',
    cn: 'Sluice default',
  });
  const shop = await issueCert(['shop.test'], { dir, file: 'shop', cn: 'Sluice shop' });
  // The customer's own certificate, which only the target holds.
  targetCert = await issueCert([PASS], { dir, file: 'customer', cn: 'Customer DB' });
  target = createTlsServer(
    { cert: targetCert.cert, key: readFileSync(targetCert.keyFile), allowHalfOpen: true },
    (socket) => {
      socket.on('error', () => {});
      // An echo that ends its side once the client ended its own.
      socket.pipe(socket);
    },
  );
  target.on('connection', (socket: Socket) => {
    targetConnections++;
    socket.once('close', () => targetClosed++);
  });
  target.on('tlsClientError', () => {});
  const targetPort = await listenOnLoopback(target as unknown as NetServer);
  origin = await startOrigin('terminated');
  stack = await Stack.start({
    routes: [
      { host: 'shop.test', target: origin.url },
      { host: PASS, target: `tcp://127.0.0.1:${targetPort}`, tls: 'passthrough' },
    ],
    extraYaml: [
      'tls:',
      '  listen: 127.0.0.1:0',
      `  peekTimeout: ${PEEK_MS}`,
      '  certs:',
      ...[sluiceDefault, shop].map(
        (c) => `    - { cert: ${JSON.stringify(c.certFile)}, key: ${JSON.stringify(c.keyFile)} }`,
      ),
      'tunnel:',
      `  gracePeriod: ${GRACE_MS}`,
    ].join('\n'),
  });
  const line = await stack.controller.waitLine(
    'the TLS listener',
    (l) => l.event === 'listening' && l.listener === 'tls',
  );
  tlsPort = Number(new URL(String(line.url)).port);
});

after(async () => {
  await stack?.stop();
  await origin?.close();
  target?.close();
});

describe('TLS passthrough by SNI', () => {
  test("openssl s_client -servername for the passthrough host sees the target's certificate", async () => {
    assert.equal(await presented(PASS), 'Customer DB');
  });

  test("a terminated host on the same port sees Sluice's certificate, and curl gets its 200", async () => {
    assert.equal(await presented('shop.test'), 'Sluice shop');
    const r = await run(CURL, [
      ...['--silent', '--show-error', '--http1.1', '--cacert', join(ca.dir, 'ca.pem')],
      ...[
        '--resolve',
        `shop.test:${tlsPort}:127.0.0.1`,
        '--write-out',
        '%{http_code}',
        '--output',
        '/dev/null',
      ],
      `https://shop.test:${tlsPort}/headers`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '200');
  });

  test("a hello with no SNI gets Sluice's default certificate", async () => {
    assert.equal(await presented(undefined), 'Sluice default');
  });

  test('bytes echo through, the FIN passes, and the log says which route took it', async () => {
    const client = await passthrough();
    assert.equal(client.getPeerCertificate().subject.CN, 'Customer DB');
    const data = Buffer.alloc(256 * 1024, 'x');
    assert.deepEqual(await echo(client, Buffer.from('ping')), Buffer.from('ping'));
    assert.equal((await echo(client, data)).length, data.length);
    const ended = once(client, 'end');
    client.end();
    await within(ended, EVENT_MS, "the target's FIN after the client's");
    // openssl's connection of the first test logged its own line, with few bytes.
    const line = await stack.controller.waitLine(
      'the passthrough log line',
      (l) =>
        l.msg === 'tls passthrough connection' &&
        l.sni === PASS &&
        Number(l.bytesIn) > data.length &&
        Number(l.bytesOut) > data.length,
      EVENT_MS,
    );
    assert.equal(line.outcome, 'done');
    assert.equal(line.cluster, 'c1');
    assert.equal(line.route, PASS);
  });

  test('a ClientHello written one byte at a time still routes to the target', async () => {
    const { socket } = await raw();
    const client = await passthrough(byteByByte(socket));
    assert.equal(client.getPeerCertificate().subject.CN, 'Customer DB');
    assert.deepEqual(await echo(client, Buffer.from('split')), Buffer.from('split'));
    client.destroy();
    socket.destroy();
  });

  test('the second and the tenth passthrough connection at once each echo their own bytes', async () => {
    const before = targetConnections;
    const clients = await Promise.all(Array.from({ length: 10 }, () => passthrough()));
    const answers = await Promise.all(
      clients.map((client, i) => echo(client, Buffer.from(`connection ${i} `.repeat(1000)))),
    );
    answers.forEach((answer, i) => assert.equal(answer.toString(), `connection ${i} `.repeat(1000)));
    assert.equal(targetConnections - before, 10);
    for (const client of clients) client.destroy();
  });

  test("a client that leaves mid-way closes the target's connection", async () => {
    const closedBefore = targetClosed;
    const client = await passthrough();
    await echo(client, Buffer.from('hello'));
    const open = targetConnections - targetClosed;
    client.destroy();
    await waitFor('the target connection to close', () => targetConnections - targetClosed < open);
    assert.ok(targetClosed > closedBefore);
  });

  test('garbage is closed without reaching the target', async () => {
    const before = targetConnections;
    const { socket, closed, received } = await raw();
    socket.write(`GET / HTTP/1.1\r\nHost: ${PASS}\r\n\r\n`);
    await within(closed, EVENT_MS, 'the garbage connection to close');
    assert.ok(!Buffer.concat(received).toString('latin1').includes('HTTP/1.1'));
    assert.equal(targetConnections, before);
  });

  test('a silent client is closed after tls.peekTimeout, and so is one that stops mid-hello', async () => {
    const before = targetConnections;
    const started = Date.now();
    const silent = await raw();
    const partial = await raw();
    // The first bytes of a real hello: a handshake record header and some of its payload.
    partial.socket.write(Buffer.from([0x16, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00, 0x00]));
    await within(Promise.all([silent.closed, partial.closed]), EVENT_MS + PEEK_MS, 'the peek timeout');
    const waited = Date.now() - started;
    assert.ok(waited >= PEEK_MS - 100, `closed after ${waited} ms, before the ${PEEK_MS} ms peek timeout`);
    assert.equal(silent.received.length + partial.received.length, 0);
    assert.equal(targetConnections, before);
  });

  test('a plain HTTP request for the passthrough host matches no route', async () => {
    const r = await ask({ port: stack.port, host: PASS, path: '/' });
    assert.equal(r.status, 404);
  });

  // Last: it stops the controller.
  test('a drain lets a passthrough connection go on for the grace period, then ends it with a FIN', async () => {
    const client = await passthrough();
    assert.deepEqual(await echo(client, Buffer.from('before')), Buffer.from('before'));
    let failure: Error | undefined;
    client.on('error', (err: Error) => (failure = err));
    const ended = new Promise((resolve) => client.once('end', resolve));
    const started = Date.now();
    const stopped = stack.controller.stop('SIGTERM');
    await stack.controller.waitLine('the drain to begin', (l) => l.event === 'stopping', EVENT_MS);
    const during = Buffer.from('during the drain');
    assert.deepEqual(await echo(client, during), during);
    await within(ended, EVENT_MS + GRACE_MS, 'the FIN once the grace period is over');
    const waited = Date.now() - started;
    assert.ok(waited >= GRACE_MS - 200, `ended after ${waited} ms, within the ${GRACE_MS} ms grace period`);
    assert.equal(failure, undefined);
    const line = await stack.controller.waitLine('grace-ended', (l) => l.event === 'grace-ended', EVENT_MS);
    assert.ok(Number(line.upgrades) >= 1);
    await stopped;
  });
});
