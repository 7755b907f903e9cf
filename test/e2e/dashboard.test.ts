// The dashboard in a real browser (the control-plane issue): Debian's Chromium, driven by playwright-core,
// against a real controller process with its admin listener, started with no agent. The login refuses a
// wrong token and accepts the right one; an agent started afterwards shows up without a reload; requests
// sent through the public listener appear in the last-requests table by their X-Request-Id and give
// their route a rate; markup in a client's Host or path shows as text. A screenshot is saved under
// test-output/dashboard/ (or $TEST_OUTPUT_DIR).
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { type Browser, chromium, type Page } from 'playwright-core';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { ask, Stack } from '../helpers/sluice-procs.js';
import { EVENT_MS, READY_MS, scaled } from '../helpers/wait.js';
import { sluiceVersion } from '../../src/version.js';

const CHROMIUM = '/usr/bin/chromium';
const skip = existsSync(CHROMIUM)
  ? false
  : `${CHROMIUM} is not installed (apt-get install chromium; .ci/run installs it)`;

const ADMIN_TOKEN = 'dashboard-admin-token-0123456789';
const HOST = 'app.example.test';
const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const OUTPUT = process.env.TEST_OUTPUT_DIR ?? join(REPO, 'test-output', 'dashboard');

describe('the dashboard in Chromium', { skip }, () => {
  let origin: Origin;
  let stack: Stack;
  let browser: Browser;
  let page: Page;
  const errors: string[] = [];

  before(async () => {
    origin = await startOrigin();
    stack = await Stack.start({
      routes: [{ host: HOST, target: origin.url }],
      agent: false,
      admin: true,
      controllerEnv: { SLUICE_ADMIN_TOKEN: ADMIN_TOKEN },
    });
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
  });

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
