// https:// targets: the agent speaks TLS to the target and verifies it, with real controller and agent
// processes and real node:https targets whose certificates a test CA signed:
// - with --target-ca the request gets 200, and a second kept-alive request reuses the TLS connection;
// - without the CA, a wrong serverName, or a target that speaks no TLS: 502 target_tls with the reason
//   on the error page, and a `target TLS failed` line on the agent;
// - a route's serverName names the certificate while the target host is an IP address;
// - the agent's --allow applies to https:// targets;
// - a WebSocket through the tunnel to a wss target echoes;
// - a missing or invalid --target-ca file stops the agent with exit 2, naming the file.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { WebSocketServer } from 'ws';
import { issueCert, makeTestCerts, type TestCerts } from '../helpers/certs.js';
import { ask, SluiceProcess, Stack, tempDir, writeFile } from '../helpers/sluice-procs.js';
import { EVENT_MS, scaled, within } from '../helpers/wait.js';
import { wsConnect, wsEcho, wsOpened } from '../helpers/ws-client.js';

let certs: TestCerts;
/** Its certificate names localhost and 127.0.0.1. */
let ipTarget: Server;
/** Its certificate names only named.shop.test. */
let namedTarget: Server;
let plainTarget: HttpServer;
let handshakes = 0;
let stack: Stack;
let bare: Stack;
let caFile = '';

function listen(server: Server | HttpServer): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)),
  );
}

function answer(server: Server | HttpServer, name: string): void {
  server.on('request', (req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ name, path: req.url, host: req.headers.host }));
  });
}

before(async () => {
  certs = await makeTestCerts();
  const dir = tempDir();
  caFile = writeFile(dir, 'target-ca.pem', certs.ca);
  const named = await issueCert(['named.shop.test'], { dir, file: 'named' });
  ipTarget = createServer({ cert: certs.cert, key: certs.key });
  ipTarget.on('secureConnection', () => handshakes++);
  answer(ipTarget, 'ip');
  new WebSocketServer({ server: ipTarget }).on('connection', (ws) => {
    ws.on('message', (data, binary) => ws.send(data, { binary }));
  });
  namedTarget = createServer({ cert: readFileSync(named.certFile), key: readFileSync(named.keyFile) });
  answer(namedTarget, 'named');
  plainTarget = createHttpServer();
  answer(plainTarget, 'plain');
  const [ipPort, namedPort, plainPort] = await Promise.all([
    listen(ipTarget),
    listen(namedTarget),
    listen(plainTarget),
  ]);
  const routes = [
    { host: 'ip.test', target: `https://127.0.0.1:${ipPort}` },
    { host: 'named.test', target: `https://127.0.0.1:${namedPort}`, serverName: 'named.shop.test' },
    { host: 'wrong-name.test', target: `https://127.0.0.1:${namedPort}`, serverName: 'other.shop.test' },
    { host: 'no-name.test', target: `https://127.0.0.1:${namedPort}` },
    { host: 'plain.test', target: `https://127.0.0.1:${plainPort}` },
    { host: 'denied.test', target: `https://10.255.255.1:${ipPort}` },
  ];
  stack = await Stack.start({ routes, agent: false });
  await stack.spawnAgent({ args: ['--target-ca', caFile] });
  bare = await Stack.start({ routes });
});

after(async () => {
  await Promise.allSettled([stack?.stop(), bare?.stop()]);
  for (const s of [ipTarget, namedTarget, plainTarget]) {
    s?.closeAllConnections();
    s?.close();
  }
});

function json(body: Buffer): Record<string, unknown> {
  return JSON.parse(body.toString()) as Record<string, unknown>;
}

/** An error page's fields (code, reason, ...), asked for as JSON. */
function page(body: Buffer): Record<string, unknown> {
  return (json(body) as { error: Record<string, unknown> }).error;
}

describe('https:// targets', () => {
  test('GET with --target-ca gets 200; a second kept-alive request reuses the TLS connection', async () => {
    const first = await ask({ port: stack.port, host: 'ip.test', path: '/one' });
    assert.equal(first.status, 200, first.body.toString());
    assert.deepEqual(json(first.body), { name: 'ip', path: '/one', host: 'ip.test' });
    const after1 = handshakes;
    assert.ok(after1 >= 1);
    const second = await ask({ port: stack.port, host: 'ip.test', path: '/two' });
    assert.equal(second.status, 200);
    assert.equal(json(second.body).path, '/two');
    assert.equal(handshakes, after1, 'the second request made a new TLS connection');
  });

  test("a route's serverName names the certificate while the target host is an IP address", async () => {
    const res = await ask({ port: stack.port, host: 'named.test', path: '/x' });
    assert.equal(res.status, 200, res.body.toString());
    assert.equal(json(res.body).name, 'named');
  });

  test('a wrong serverName: 502 target_tls with the reason, and a log line on the agent', async () => {
    const res = await ask({
      port: stack.port,
      host: 'wrong-name.test',
      headers: { accept: 'application/json' },
    });
    assert.equal(res.status, 502);
    const error = page(res.body);
    assert.equal(error.code, 'target_tls');
    assert.match(String(error.reason), /TLS to the target failed: .*ERR_TLS_CERT_ALTNAME_INVALID/);
    assert.match(String(error.reason), /other\.shop\.test/);
    const line = await stack.agent!.waitLine('the TLS failure', (l) => l.msg === 'target TLS failed');
    assert.equal(line.code, 'ERR_TLS_CERT_ALTNAME_INVALID');
  });

  test('an IP target whose certificate does not carry the IP, and no serverName: 502', async () => {
    const res = await ask({
      port: stack.port,
      host: 'no-name.test',
      headers: { accept: 'application/json' },
    });
    assert.equal(res.status, 502);
    assert.equal(page(res.body).code, 'target_tls');
  });

  test('a target that speaks no TLS: 502 target_tls', async () => {
    const res = await ask({ port: stack.port, host: 'plain.test', headers: { accept: 'application/json' } });
    assert.equal(res.status, 502);
    assert.equal(page(res.body).code, 'target_tls');
  });

  test("without --target-ca the target's certificate is not trusted: 502 with the reason", async () => {
    const res = await ask({ port: bare.port, host: 'ip.test', headers: { accept: 'application/json' } });
    assert.equal(res.status, 502);
    const error = page(res.body);
    assert.equal(error.code, 'target_tls');
    assert.match(String(error.reason), /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED|UNABLE_TO_GET_ISSUER/);
    await bare.agent!.waitLine('the TLS failure', (l) => l.msg === 'target TLS failed');
  });

  test("the agent's --allow applies to https:// targets", async () => {
    const res = await ask({ port: stack.port, host: 'denied.test', headers: { accept: 'application/json' } });
    assert.equal(res.status, 502);
    assert.equal(page(res.body).code, 'target_denied');
  });

  test('a WebSocket to a wss target echoes', async () => {
    const ws = wsConnect({ port: stack.port, host: 'ip.test' }, '/ws');
    try {
      await wsOpened(ws);
      assert.equal((await wsEcho(ws, 'hello over wss')).data.toString(), 'hello over wss');
      const big = Buffer.alloc(256 * 1024, 7);
      assert.ok((await wsEcho(ws, big)).data.equals(big));
    } finally {
      ws.terminate();
    }
  });
});

describe('--target-ca', () => {
  async function refused(file: string): Promise<SluiceProcess> {
    const agent = new SluiceProcess(['agent', '--controller', stack.tunnelUrl, '--target-ca', file], {
      SLUICE_TOKEN: 'e2e-token-0123456789abcdef',
    });
    const code = await within(agent.exited, scaled(EVENT_MS), 'the agent to exit');
    assert.equal(code, 2, agent.stderr);
    return agent;
  }

  test('a missing file stops the agent with exit 2, naming the file', async () => {
    const file = join(tempDir(), 'missing.pem');
    const agent = await refused(file);
    assert.match(agent.stderr + JSON.stringify(agent.lines), /targetCa file .*missing\.pem.* cannot be read/);
  });

  test('a file with no certificate stops the agent with exit 2, naming the file', async () => {
    const file = writeFile(tempDir(), 'junk.pem', 'not a certificate\n');
    const agent = await refused(file);
    assert.match(agent.stderr + JSON.stringify(agent.lines), /targetCa file .*junk\.pem.* must hold PEM/);
  });
});
