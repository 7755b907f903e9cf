// TCP routes and TLS passthrough in a fleet (issue #15: every route kind goes through the dispatcher,
// so that peer forwarding works for all of them). Two real controllers on one real redis-server, the
// agent's tunnels on controller A only. Controller B has a TCP route and a passthrough host of its
// own, and carries their connections over its peer tunnel to A:
// - a TCP connection through B echoes 1 MiB written with a FIN, the echo ends with the target's FIN,
//   and its log line on B names peer A as `via`; the 2nd and the 10th at once each echo their own bytes;
// - a passthrough handshake through B sees the target's own certificate, and its bytes echo.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect as netConnect, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { connect as tlsConnect, createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { issueCert, makeTestCerts, type TestCerts } from '../helpers/certs.js';
import { MiB } from '../helpers/data.js';
import { Fleet, type FleetController } from '../helpers/fleet.js';
import { listenOnLoopback } from '../helpers/listen.js';
import { tempDir } from '../helpers/sluice-procs.js';
import { EVENT_MS, READY_MS, scaled, within } from '../helpers/wait.js';

const PASS = 'db.fleet.test';

let ca: TestCerts;
let fleet: Fleet;
let echoTarget: Server;
let tlsTarget: Server;
const echoSockets: Socket[] = [];
/** Port of controller B's TCP route, and of its TLS listener. */
let tcpPortB = 0;
let tlsPortB = 0;

/** One connection that writes `data` and its FIN, and resolves with all it read until the close. */
function exchange(port: number, data: Buffer): Promise<{ bytes: Buffer; fin: boolean }> {
  return within(
    new Promise((resolve, reject) => {
      const c = netConnect({ port, host: '127.0.0.1', allowHalfOpen: true });
      const chunks: Buffer[] = [];
      let fin = false;
      c.on('data', (b: Buffer) => chunks.push(b));
      c.on('end', () => {
        fin = true;
        c.end();
      });
      c.on('error', reject);
      c.on('close', () => resolve({ bytes: Buffer.concat(chunks), fin }));
      c.end(data);
    }),
    scaled(EVENT_MS),
    `an exchange of ${data.length} bytes on port ${port}`,
  );
}

/** Until B carries a TCP connection to the target: it learns from presence that A holds c1's tunnels. */
async function untilCarried(port: number): Promise<void> {
  const deadline = Date.now() + scaled(READY_MS);
  for (let attempt = 0; attempt < 10_000; attempt++) {
    const got = await exchange(port, Buffer.from('ping')).catch(() => undefined);
    if (got?.bytes.toString() === 'ping') return;
    if (Date.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`controller B did not carry a TCP connection within ${scaled(READY_MS)}ms`);
}

function listening(c: FleetController, listener: string): Promise<number> {
  return c.proc
    .waitLine(`${c.name}'s ${listener} listener`, (l) => l.event === 'listening' && l.listener === listener)
    .then((l) => Number(new URL(String(l.url)).port));
}

before(async () => {
  ca = await makeTestCerts();
  const dir = tempDir();
  const edge = await issueCert(['edge.fleet.test'], { dir, file: 'edge', cn: 'Sluice edge' });
  const customer = await issueCert([PASS], { dir, file: 'customer', cn: 'Customer DB' });
  // An echo that ends its side once the client ended its own.
  echoTarget = createServer({ allowHalfOpen: true }, (socket) => {
    echoSockets.push(socket);
    socket.on('error', () => {});
    socket.pipe(socket);
  });
  const echoPort = await listenOnLoopback(echoTarget);
  tlsTarget = createTlsServer(
    { cert: customer.cert, key: readFileSync(customer.keyFile), allowHalfOpen: true },
    (socket) => {
      socket.on('error', () => {});
      socket.pipe(socket);
    },
  );
  tlsTarget.on('tlsClientError', () => {});
  const tlsTargetPort = await listenOnLoopback(tlsTarget);
  fleet = await Fleet.start({
    controllers: 2,
    routes: [{ host: PASS, target: `tcp://127.0.0.1:${tlsTargetPort}`, tls: 'passthrough' }],
    extraYaml: [
      'tcpRoutes:',
      `  - { listen: 127.0.0.1:0, cluster: c1, target: tcp://127.0.0.1:${echoPort} }`,
      'tls:',
      '  listen: 127.0.0.1:0',
      '  certs:',
      `    - { cert: ${JSON.stringify(edge.certFile)}, key: ${JSON.stringify(edge.keyFile)} }`,
    ].join('\n'),
  });
  const b = fleet.at('b');
  [tcpPortB, tlsPortB] = await Promise.all([listening(b, 'tcp'), listening(b, 'tls')]);
  await fleet.startAgent([fleet.at('a')], { tunnels: 2 });
  await untilCarried(tcpPortB);
});

after(async () => {
  await fleet?.stop();
  echoTarget?.close();
  tlsTarget?.close();
  for (const s of echoSockets) s.destroy();
});

describe('TCP routes and TLS passthrough through a peer', () => {
  test('a TCP connection through B echoes 1 MiB, and its log line names the peer', async () => {
    const data = randomBytes(MiB);
    const got = await exchange(tcpPortB, data);
    assert.equal(got.bytes.length, data.length);
    assert.ok(got.bytes.equals(data), 'the echo differs from what was sent');
    assert.equal(got.fin, true, 'the target FIN did not come back as a FIN');
    const b = fleet.at('b');
    const line = await b.proc.waitLine(
      'the tcp connection line',
      (l) => l.msg === 'tcp connection' && l.bytesIn === MiB,
    );
    assert.equal(line.outcome, 'done');
    assert.equal(line.cluster, 'c1');
    const a = fleet.at('a').proc.lines.find((l) => l.event === 'listening' && l.listener === 'peer');
    assert.equal(line.via, a?.instance, "B's line does not name peer A as the way it went");
  });

  test('the 2nd and the 10th connection through B at once each echo their own bytes', async () => {
    const datas = Array.from({ length: 10 }, (_, i) =>
      Buffer.concat([Buffer.from(`conn ${i}:`), randomBytes(64 * 1024)]),
    );
    const got = await Promise.all(datas.map((d) => exchange(tcpPortB, d)));
    for (let i = 0; i < datas.length; i++) {
      assert.equal(
        createHash('sha256').update(got[i]!.bytes).digest('hex'),
        createHash('sha256').update(datas[i]!).digest('hex'),
        `connection ${i}`,
      );
    }
  });

  test("a passthrough handshake through B sees the target's certificate, and echoes", async () => {
    for (let i = 1; i <= 2; i++) {
      const client: TLSSocket = tlsConnect({
        port: tlsPortB,
        host: '127.0.0.1',
        servername: PASS,
        ca: ca.ca,
      });
      client.on('error', () => {});
      try {
        await within(
          new Promise<void>((resolve, reject) => {
            client.once('secureConnect', resolve);
            client.once('error', reject);
          }),
          scaled(EVENT_MS),
          `handshake ${i} with the target through B`,
        );
        const cert = client.getPeerCertificate();
        assert.equal(cert.subject.CN, 'Customer DB', `handshake ${i}`);
        const data = randomBytes(100_000);
        const chunks: Buffer[] = [];
        let got = 0;
        const echoed = new Promise<void>((resolve) =>
          client.on('data', (b: Buffer) => {
            chunks.push(b);
            got += b.length;
            if (got >= data.length) resolve();
          }),
        );
        client.write(data);
        await within(echoed, scaled(EVENT_MS), `the echo ${i}`);
        assert.ok(Buffer.concat(chunks).equals(data));
      } finally {
        client.destroy();
      }
    }
  });
});
