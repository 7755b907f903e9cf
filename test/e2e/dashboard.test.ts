// The dashboard in a real browser (the control-plane issue): Debian's Chromium, driven by playwright-core,
// against a real controller process with its admin listener, started with no agent. The login refuses a
// wrong token and accepts the right one; an agent started afterwards shows up without a reload; requests
// sent through the public listener appear in the last-requests table by their X-Request-Id and give
// their route a rate; markup in a client's Host or path shows as text; a TCP route and a TLS passthrough
// route added through the admin API show in "TCP and passthrough routes", a net socket's and a TLS
// client's connections in "Last 100 TCP connections", and each route disappears once it is removed,
// all without a reload. A screenshot is saved under
// test-output/dashboard/ (or $TEST_OUTPUT_DIR).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { connect as netConnect, type Server as NetServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { connect as tlsConnect, type Server as TlsServer } from 'node:tls';
import { type Browser, chromium, type Page } from 'playwright-core';
import { issueCert, makeTestCerts, type TestCerts } from '../helpers/certs.js';
import { echoServer, tlsEchoServer } from '../helpers/listen.js';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { ask, Stack, tempDir } from '../helpers/sluice-procs.js';
import { EVENT_MS, READY_MS, scaled, within } from '../helpers/wait.js';
import { sluiceVersion } from '../../src/version.js';

const CHROMIUM = '/usr/bin/chromium';
const skip = existsSync(CHROMIUM)
  ? false
  : `${CHROMIUM} is not installed (apt-get install chromium; .ci/run installs it)`;

const ADMIN_TOKEN = 'dashboard-admin-token-0123456789';
const HOST = 'app.example.test';
const PASS = 'db.example.test';
const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const OUTPUT = process.env.TEST_OUTPUT_DIR ?? join(REPO, 'test-output', 'dashboard');

describe('the dashboard in Chromium', { skip }, () => {
  let origin: Origin;
  let stack: Stack;
  let browser: Browser;
  let page: Page;
  const errors: string[] = [];
  let ca: TestCerts;
  let tcpTarget: NetServer;
  let tlsTarget: TlsServer;
  let tcpTargetPort = 0;
  let tlsTargetPort = 0;
  let tlsPort = 0;

  before(async () => {
    origin = await startOrigin();
    ca = await makeTestCerts();
    const dir = tempDir();
    const sluiceCert = await issueCert(['default.sluice.test'], { dir, file: 'default' });
    const customer = await issueCert([PASS], { dir, file: 'customer', cn: 'Customer DB' });
    ({ server: tcpTarget, port: tcpTargetPort } = await echoServer());
    ({ server: tlsTarget, port: tlsTargetPort } = await tlsEchoServer(
      customer.cert,
      readFileSync(customer.keyFile, 'utf8'),
    ));
    stack = await Stack.start({
      routes: [{ host: HOST, target: origin.url }],
      agent: false,
      admin: true,
      controllerEnv: { SLUICE_ADMIN_TOKEN: ADMIN_TOKEN },
      extraYaml: [
        'tls:',
        '  listen: 127.0.0.1:0',
        '  certs:',
        `    - { cert: ${JSON.stringify(sluiceCert.certFile)}, key: ${JSON.stringify(sluiceCert.keyFile)} }`,
      ].join('\n'),
    });
    const line = await stack.controller.waitLine(
      'the TLS listener',
      (l) => l.event === 'listening' && l.listener === 'tls',
    );
    tlsPort = Number(new URL(String(line.url)).port);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox'],
      timeout: scaled(READY_MS),
    });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.setDefaultTimeout(scaled(EVENT_MS));
    page.on('pageerror', (err) => errors.push(err.message));
    page.on('console', (msg) => {
      // The wrong token's 401s are logged by the browser itself; anything else (a CSP violation, a
      // script error) is a failure.
      if (msg.type() === 'error' && !/status of 401/.test(msg.text())) errors.push(msg.text());
    });
  });

  after(async () => {
    await browser?.close();
    await stack?.stop();
    await origin?.close();
    tcpTarget?.close();
    tlsTarget?.close();
  });

  async function admin(method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
    const res = await fetch(`${stack.adminUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    const json = (text === '' ? {} : JSON.parse(text)) as Record<string, unknown>;
    assert.ok(res.ok, `${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  }

  /** Sends `data` on `socket`, waits for its echo, then closes it and waits for the close. */
  async function echoAndClose(socket: Socket, data: string): Promise<void> {
    let got = '';
    const echoed = new Promise<void>((resolve, reject) => {
      socket.on('data', (chunk: Buffer) => {
        got += chunk.toString();
        if (got.length >= data.length) resolve();
      });
      socket.once('close', () => reject(new Error(`closed after ${got.length} bytes`)));
    });
    socket.write(data);
    await within(echoed, EVENT_MS, 'the echo');
    assert.equal(got, data);
    const closed = once(socket, 'close');
    socket.end();
    await within(closed, EVENT_MS, 'the close');
  }

  test('a wrong token is refused with an error; the right one opens the dashboard', async () => {
    const response = await page.goto(`${stack.adminUrl}/`);
    assert.equal(response?.status(), 200);
    const headers = response!.headers();
    assert.match(headers['content-security-policy'] ?? '', /script-src 'self'/);
    assert.equal(headers['x-content-type-options'], 'nosniff');
    assert.equal(await page.title(), 'Sluice dashboard');

    await page.locator('#login-form').waitFor();
    await page.fill('#token', 'not-the-admin-token-0123456789');
    await page.click('#login-submit');
    const error = page.locator('#login-error');
    await error.waitFor();
    assert.match(await error.innerText(), /wrong admin token/i);
    assert.equal(await page.locator('#dashboard').isVisible(), false);

    await page.fill('#token', ADMIN_TOKEN);
    await page.click('#login-submit');
    await page.locator('#dashboard').waitFor();
    assert.equal(await page.locator('#login').isVisible(), false);
    // The session: the token in this tab's sessionStorage, sent as a bearer header; no cookie.
    assert.equal(await page.evaluate('sessionStorage.getItem("sluice.adminToken")'), ADMIN_TOKEN);
    assert.equal(await page.evaluate('document.cookie'), '');
    // The cluster is there, with no agent yet; so is the route, with no traffic.
    await page.locator('#tunnels tr.group', { hasText: 'c1' }).filter({ hasText: 'no agent' }).waitFor();
    await page.locator('#routes tbody tr', { hasText: HOST }).waitFor();
    assert.equal(await page.locator('#count-tunnels').innerText(), '0');
    // A lone controller is no fleet: the fleet view stays hidden.
    assert.equal(await page.locator('#fleet-view').isVisible(), false);
  });

  test('an agent started now shows up with its tunnels, without a reload', async () => {
    // A mark on the window: a reload would lose it.
    await page.evaluate('window.sluiceTestMark = 42');
    await stack.spawnAgent({ name: 'dash-agent', tunnels: 2 });
    const tunnelRows = page.locator('#tunnels tbody tr:not(.group)');
    await tunnelRows.nth(1).waitFor();
    const rows = await tunnelRows.allInnerTexts();
    assert.equal(rows.length, 2, rows.join('\n'));
    // The version column shows what the agent said in its HELLO: this package's version.
    const version = sluiceVersion().replaceAll('.', '\\.');
    const shape = new RegExp(`^dash-agent\\t[0-9a-f]{8}\\t${version}\\t127\\.0\\.0\\.1:\\d+\\t\\d+ s ago\\t`);
    for (const row of rows) assert.match(row, shape);
    await page.locator('#tunnels tr.group', { hasText: 'c1' }).filter({ hasText: '2 tunnels' }).waitFor();
    assert.equal(await page.locator('#count-tunnels').innerText(), '2');
    assert.equal(await page.evaluate('window.sluiceTestMark'), 42, 'the page was not reloaded');
  });

  test('requests through the public listener appear live, newest first, and give the route a rate', async () => {
    const ids = ['dash-req-1', 'dash-req-2', 'dash-req-3'];
    for (const id of ids) {
      const reply = await ask({
        port: stack.port,
        host: HOST,
        path: '/headers',
        headers: { 'x-request-id': id },
      });
      assert.equal(reply.status, 200);
    }
    const lost = await ask({
      port: stack.port,
      host: 'lost.example.test',
      headers: { 'x-request-id': 'dash-404' },
    });
    assert.equal(lost.status, 404);

    await page.locator('#requests tbody tr', { hasText: 'dash-404' }).waitFor();
    const rows = await page.locator('#requests tbody tr').allInnerTexts();
    assert.equal(rows.length, 4, rows.join('\n'));
    assert.match(rows[0]!, /\tGET\tlost\.example\.test\t\/\t404\t.*\tdash-404$/);
    for (const [i, id] of [...ids].reverse().entries()) {
      assert.match(
        rows[i + 1]!,
        new RegExp(`^\\d\\d:\\d\\d:\\d\\d\\.\\d{3}\\tGET\\t${HOST}\\t/headers\\t200\\t`),
      );
      assert.ok(rows[i + 1]!.endsWith(`\t${id}`), rows[i + 1]);
    }

    // The route's req/s cell (the fifth) turns non-zero; the no-route line counts the 404. (Locators,
    // not waitForFunction: the page's CSP rightly refuses the eval that a string predicate needs.)
    const routeRow = page.locator('#routes tbody tr', { hasText: HOST });
    await routeRow
      .locator('td:nth-child(5)')
      .filter({ hasText: /^(?!0$)/ })
      .waitFor();
    const route = await routeRow.innerText();
    assert.match(route, /^app\.example\.test\t\/\tc1\thttp:\/\/127\.0\.0\.1:\d+\t\d+(\.\d+)?\t0%\t0%$/);
    assert.doesNotMatch(route, /\t0\t0%\t0%$/);
    assert.match(await page.locator('#routes tr.unrouted').innerText(), /\t0%\t0%$/);
    assert.equal(await page.locator('#window').innerText(), '10');
  });

  test('TCP and passthrough routes show live with their connections; a route removed disappears', async () => {
    const added = await admin('POST', '/api/tcp-routes', {
      listen: '127.0.0.1:0',
      cluster: 'c1',
      target: `tcp://127.0.0.1:${tcpTargetPort}`,
    });
    const address = (added.tcpRoute as { address: string }).address;
    await admin('POST', '/api/routes', {
      host: PASS,
      cluster: 'c1',
      target: `tcp://127.0.0.1:${tlsTargetPort}`,
      tls: 'passthrough',
    });
    const tcpRow = page.locator('#tcp-routes tbody tr', { hasText: address });
    const passRow = page.locator('#tcp-routes tbody tr', { hasText: PASS });
    await tcpRow.waitFor();
    await passRow.waitFor();
    assert.equal(
      await tcpRow.innerText(),
      `TCP\t${address}\tc1\ttcp://127.0.0.1:${tcpTargetPort}\t0\t0\t0\t0 B\t0 B`,
    );
    assert.match(
      await passRow.innerText(),
      /^TLS passthrough\tdb\.example\.test\tc1\ttcp:\/\/127\.0\.0\.1:\d+\t0\t0\t0\t/,
    );
    // A passthrough route is no HTTP route: the Routes table does not list it.
    assert.equal(await page.locator('#routes tbody tr', { hasText: PASS }).count(), 0);

    const tcpClient = netConnect(Number(address.slice(address.lastIndexOf(':') + 1)), '127.0.0.1');
    await within(once(tcpClient, 'connect'), EVENT_MS, 'the TCP route connection');
    const tcpClientPort = tcpClient.localPort!;
    await echoAndClose(tcpClient, 'hello over tcp');
    const raw = netConnect(tlsPort, '127.0.0.1');
    const tlsClient = tlsConnect({ socket: raw, servername: PASS, ca: ca.ca });
    await within(once(tlsClient, 'secureConnect'), EVENT_MS, 'the passthrough handshake');
    assert.equal(tlsClient.getPeerCertificate().subject.CN, 'Customer DB');
    const tlsClientPort = raw.localPort!;
    await echoAndClose(tlsClient, 'hello through passthrough');

    const tcpDone = page.locator('#connections tbody tr', { hasText: `127.0.0.1:${tcpClientPort}` });
    const passDone = page.locator('#connections tbody tr', { hasText: `127.0.0.1:${tlsClientPort}` });
    await tcpDone.waitFor();
    await passDone.waitFor();
    assert.match(
      await tcpDone.innerText(),
      new RegExp(
        `^\\d\\d:\\d\\d:\\d\\d\\.\\d{3}\\t127\\.0\\.0\\.1:${tcpClientPort}\\t${address.replaceAll('.', '\\.')}\\ttcp://127\\.0\\.0\\.1:${tcpTargetPort}\\t.+\\t14 B\\t14 B\\tdone$`,
      ),
    );
    assert.match(await passDone.innerText(), /\tdb\.example\.test\t.*\tdone$/);
    // Newest first: the passthrough connection closed last.
    const rows = await page.locator('#connections tbody tr').allInnerTexts();
    assert.equal(rows.length, 2, rows.join('\n'));
    assert.ok(rows[0]!.includes(PASS), rows.join('\n'));
    await tcpRow.locator('td:nth-child(6)').filter({ hasText: /^1$/ }).waitFor();
    await passRow.locator('td:nth-child(6)').filter({ hasText: /^1$/ }).waitFor();
    assert.match(await tcpRow.innerText(), /\t0\t1\t0\t14 B\t14 B$/);

    await admin('DELETE', `/api/tcp-routes/${encodeURIComponent(address)}`);
    await tcpRow.waitFor({ state: 'detached' });
    await admin('DELETE', `/api/routes?host=${PASS}`);
    await passRow.waitFor({ state: 'detached' });
    await page.locator('#tcp-routes tbody tr.empty').waitFor();
    // The finished connections stay listed.
    assert.equal(await page.locator('#connections tbody tr').count(), 2);
  });

  test("markup in a client's Host and path is shown as text", async () => {
    const path = '/<img/src=x/onerror=window.sluicePwned=1>';
    await ask({ port: stack.port, host: HOST, path, headers: { 'x-request-id': 'dash-markup-path' } });
    // Not a valid Host: refused with 400 before routing, and recorded with the Host as sent.
    const host = '<b>bold</b>';
    await ask({ port: stack.port, host, headers: { 'x-request-id': 'dash-markup-host' } });
    const pathRow = page.locator('#requests tbody tr', { hasText: 'dash-markup-path' });
    const hostRow = page.locator('#requests tbody tr', { hasText: 'dash-markup-host' });
    await pathRow.waitFor();
    await hostRow.waitFor();
    assert.equal(await pathRow.locator('td').nth(3).textContent(), path);
    assert.equal(await hostRow.locator('td').nth(2).textContent(), host);
    assert.equal(await hostRow.locator('td').nth(4).textContent(), '400');
    assert.equal(await page.locator('#requests img, #requests b').count(), 0);
    assert.equal(await page.evaluate('window.sluicePwned'), undefined);
  });

  test('a screenshot of the live page is saved', async () => {
    mkdirSync(OUTPUT, { recursive: true });
    const file = join(OUTPUT, 'dashboard.png');
    await page.screenshot({ path: file, fullPage: true });
    assert.ok(existsSync(file));
    assert.ok(statSync(file).size > 10_000, 'a real picture, not an empty one');
  });

  test('logging out forgets the token', async () => {
    await page.click('#logout');
    await page.locator('#login-form').waitFor();
    assert.equal(await page.evaluate('sessionStorage.getItem("sluice.adminToken")'), null);
    assert.equal(await page.locator('#dashboard').isVisible(), false);
    assert.deepEqual(errors, [], 'the page logged errors');
  });
});
