// A real browser through the tunnel (the upgrade issue): Debian's Chromium, driven by playwright-core,
// loads the `sluice dev` demo page at http://demo.localhost:PORT/ (Chromium resolves *.localhost to
// loopback), and the page's WebSocket echo works through controller, tunnel and agent. Then over
// https://demo.localhost:PORT/ with dev's self-signed certificate (issue #14): the page comes over
// HTTP/2, and its WebSocket echoes too, whether Chromium opens it as an RFC 8441 extended CONNECT on
// that connection or as an HTTP/1.1 upgrade on another; the test reports which.
import assert from 'node:assert/strict';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type Browser, chromium, type Page } from 'playwright-core';
import { type LogLine, SluiceProcess, tempDir } from '../helpers/sluice-procs.js';
import { EVENT_MS, READY_MS, scaled, within } from '../helpers/wait.js';

const CHROMIUM = '/usr/bin/chromium';
const skip = existsSync(CHROMIUM)
  ? false
  : `${CHROMIUM} is not installed (apt-get install chromium; .ci/run installs it)`;

describe('the sluice dev demo page in Chromium', { skip }, () => {
  let dev: SluiceProcess;
  let browser: Browser;
  let demoUrl: string;
  let httpsUrl: string;
  let dir = '';

  before(async () => {
    // Port 0 for every listener: nothing fixed to collide with on a shared machine. dev-ready comes
    // once the agent has a tunnel up.
    dir = tempDir();
    dev = new SluiceProcess([
      'dev',
      '--listen',
      '127.0.0.1:0',
      '--https-listen',
      '127.0.0.1:0',
      '--admin-listen',
      '127.0.0.1:0',
      '--data',
      join(dir, 'data'),
    ]);
    const ready = await dev.waitLine('sluice dev ready', (l) => l.event === 'dev-ready');
    demoUrl = String(ready.demo);
    httpsUrl = String(ready.demoHttps);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox'],
      timeout: scaled(READY_MS),
    });
  });

  after(async () => {
    await browser?.close();
    await dev?.stop();
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  test('the page loads through the tunnel and echoes messages over its WebSocket', async () => {
    assert.match(demoUrl, /^http:\/\/demo\.localhost:\d+\/$/);
    const page = await browser.newPage();
    page.setDefaultTimeout(scaled(EVENT_MS));
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));
    page.on('console', (msg) => {
      if (msg.type() === 'error') errors.push(msg.text());
    });

    const response = await page.goto(demoUrl);
    assert.equal(response?.status(), 200);
    assert.equal(await page.title(), 'Sluice demo');
    // The page shows the request the demo service received: it came through the controller.
    const shown = await page.locator('table').innerText();
    assert.match(shown, /demo\.localhost/);
    assert.match(shown, /1\.1 sluice/);

    await page.locator('#state', { hasText: 'connected' }).waitFor();
    await page.fill('#message', 'hello from chromium');
    await page.click('#send button');
    await page.locator('#log li', { hasText: '\u2190 hello from chromium' }).waitFor();
    await page.fill('#message', 'second, by Enter');
    await page.press('#message', 'Enter');
    await page.locator('#log li', { hasText: '\u2190 second, by Enter' }).waitFor();
    const lines = await page.locator('#log li').allInnerTexts();
    assert.equal(lines.length, 4, lines.join(' | '));
    assert.equal(lines[0], '\u2192 hello from chromium');
    // Each echo shows its round-trip time through the tunnel.
    assert.match(lines[1]!, /^\u2190 hello from chromium \(\d+\.\d ms\)$/);
    assert.equal(lines[2], '\u2192 second, by Enter');
    assert.match(lines[3]!, /^\u2190 second, by Enter \(\d+\.\d ms\)$/);
    assert.equal(await page.inputValue('#message'), '', 'the box is cleared after sending');
    assert.deepEqual(errors, [], 'the page logged errors');

    await page.close();
    // Closing the page closes its WebSocket; the controller logs the upgrade with the target's 101.
    const line = await dev.waitLine(
      'the log line of the WebSocket',
      (l) => l.msg === 'request' && l.path === '/ws' && l.status === 101,
    );
    assert.equal(line.host, new URL(demoUrl).host);
  });

  test('a second page gets its own WebSocket and echo', async () => {
    const page = await browser.newPage();
    page.setDefaultTimeout(scaled(EVENT_MS));
    await within(page.goto(demoUrl), EVENT_MS, 'the page');
    await page.locator('#state', { hasText: 'connected' }).waitFor();
    await page.fill('#message', 'again');
    await page.press('#message', 'Enter');
    await page.locator('#log li', { hasText: '\u2190 again' }).waitFor();
    await page.close();
  });

  test('over https the page comes by HTTP/2 and its WebSocket echoes, by RFC 8441 or HTTP/1.1', async (t) => {
    assert.match(httpsUrl, /^https:\/\/demo\.localhost:\d+\/$/);
    // dev's certificate is self-signed; the browser is told to take it, as a person would click through.
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    try {
      const page = await context.newPage();
      const errors = watchErrors(page);
      const response = await within(page.goto(httpsUrl), EVENT_MS, 'the https page');
      assert.equal(response?.status(), 200);
      assert.equal(await page.title(), 'Sluice demo');
      const nextHop = await page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol");
      assert.equal(nextHop, 'h2');
      // What the demo service received: an HTTP/2 request, passed on by the controller.
      assert.match(await page.locator('table').innerText(), /2 sluice/);
      for (const text of ['over https', 'and again']) {
        await page.locator('#state', { hasText: 'connected' }).waitFor();
        await page.fill('#message', text);
        await page.press('#message', 'Enter');
        await page.locator('#log li', { hasText: `\u2190 ${text} (` }).waitFor();
      }
      assert.equal((await page.locator('#log li').allInnerTexts()).length, 4);
      assert.deepEqual(errors, [], 'the page logged errors');
      await page.close();
    } finally {
      await context.close();
    }
    // Closing the page closes its WebSocket, and the controller writes its log line: an extended
    // CONNECT (RFC 8441) is logged with method CONNECT, an HTTP/1.1 upgrade with GET and the 101.
    const host = new URL(httpsUrl).host;
    const line = await dev.waitLine(
      'the log line of the https WebSocket',
      (l) => l.msg === 'request' && l.path === '/ws' && l.host === host,
    );
    t.diagnostic(`Chromium opened the WebSocket over ${howOpened(line)} (log line: ${JSON.stringify(line)})`);
  });
});

/** The page's errors and console errors, as they come. */
function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.setDefaultTimeout(scaled(EVENT_MS));
  page.on('pageerror', (err) => errors.push(err.message));
  page.on('console', (msg) => {
    if (msg.type() === 'error') errors.push(msg.text());
  });
  return errors;
}

/** How the controller's request line says a WebSocket was opened. */
function howOpened(line: LogLine): string {
  if (line.method === 'CONNECT') return 'HTTP/2, an RFC 8441 extended CONNECT';
  if (line.method === 'GET' && line.status === 101) return 'HTTP/1.1, an Upgrade (101)';
  return `neither (method ${String(line.method)}, status ${String(line.status)})`;
}
