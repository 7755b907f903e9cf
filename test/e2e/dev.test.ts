// `sluice dev` (what `npm start` runs): one process with a controller, an agent and the demo service,
// reachable at http://demo.localhost:PORT through the tunnel.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { ask, SluiceProcess } from '../helpers/sluice-procs.js';
import { EVENT_MS, scaled, waitFor } from '../helpers/wait.js';

let dev: SluiceProcess;
let port = 0;
let demoUrl = '';

before(async () => {
  dev = new SluiceProcess(['dev', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0']);
  const ready = await dev.waitLine('dev-ready', (l) => l.event === 'dev-ready');
  demoUrl = String(ready.demo);
  port = Number(new URL(demoUrl).port);
});

after(async () => {
  await dev?.stop();
});

test('the ready line names the demo URL through the tunnel, and the admin URL', async () => {
  assert.match(demoUrl, /^http:\/\/demo\.localhost:\d+\/$/);
  const ready = dev.lines.find((l) => l.event === 'dev-ready')!;
  assert.match(String(ready.admin), /^http:\/\/127\.0\.0\.1:\d+$/);
  // stderr is another pipe: the human-readable URLs may land a moment after the JSON line.
  await waitFor('the URLs on stderr', () => /demo\.localhost/.test(dev.stderr));
});

test('the demo page answers through the tunnel', async () => {
  const r = await ask({ port, host: `demo.localhost:${port}` });
  assert.equal(r.status, 200);
  assert.match(r.body.toString(), /Sluice demo/);
  assert.equal(r.headers.via, '1.1 sluice');
});

test('curl http://demo.localhost:PORT/ answers through the tunnel', async (t) => {
  if (!existsSync('/usr/bin/curl')) return t.skip('curl is not installed');
  const out = await new Promise<string>((resolve, reject) => {
    execFile(
      '/usr/bin/curl',
      ['-sS', '--noproxy', '*', '-o', '-', '-w', '\n%{http_code}', demoUrl],
      { timeout: scaled(EVENT_MS) },
      (err, stdout) => (err === null ? resolve(stdout) : reject(err)),
    );
  });
  assert.match(out, /Sluice demo/);
  assert.match(out, /\n200$/);
});

test('the demo echo API streams a body through and back', async () => {
  const body = Buffer.alloc(300_000, 'x');
  const r = await ask({ port, host: 'demo.localhost', path: '/api/echo', method: 'POST', body });
  assert.equal(r.status, 200);
  const seen = JSON.parse(r.body.toString()) as { bodyBytes: number };
  assert.equal(seen.bodyBytes, body.length);
});

test('an unknown host is a 404 page, not a crash', async () => {
  const r = await ask({ port, host: '127.0.0.1', headers: { accept: 'application/json' } });
  assert.equal(r.status, 404);
});
