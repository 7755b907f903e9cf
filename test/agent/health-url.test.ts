// The readiness line names a URL a client can use as it is: a real agent process with
// `--health-listen [::1]:0` logged `http://::1:PORT`, which new URL() refuses, while the controller's
// copy of the same helper bracketed the address. Both now share listenerUrl (src/config/values.ts).
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { listenerUrl } from '../../src/config/values.js';
import { RawController } from '../helpers/raw-controller.js';
import { SluiceProcess, TOKEN } from '../helpers/sluice-procs.js';

describe('listenerUrl', () => {
  test('brackets IPv6 hosts, and every result parses back to its host and port', () => {
    assert.equal(listenerUrl('::1', 8090), 'http://[::1]:8090');
    assert.equal(listenerUrl('127.0.0.1', 8090), 'http://127.0.0.1:8090');
    assert.equal(listenerUrl('localhost', 1), 'http://localhost:1');
    assert.equal(listenerUrl('::', 80), 'http://[::]:80');
    for (const [host, port] of [
      ['::1', 8090],
      ['fe80::1', 9],
      ['0.0.0.0', 65535],
      ['gw.example.test', 443],
    ] as const) {
      const url = new URL(listenerUrl(host, port));
      assert.equal(url.hostname.replace(/^\[|\]$/g, ''), host);
      assert.equal(url.port, String(port));
    }
  });
});

describe('a real agent with --health-listen [::1]:0', () => {
  let controller: RawController;
  let agent: SluiceProcess | undefined;
  before(async () => {
    controller = await RawController.start();
  });
  after(async () => {
    await agent?.stop('SIGKILL');
    await controller?.close();
  });

  test('logs a URL that new URL() parses and that answers /healthz', async () => {
    agent = new SluiceProcess(
      ['agent', '--controller', controller.url, '--tunnels', '1', '--health-listen', '[::1]:0'],
      { SLUICE_TOKEN: TOKEN },
    );
    const line = await agent.waitLine(
      'the health listener',
      (l) => l.event === 'listening' && l.listener === 'health',
      30_000,
    );
    const url = new URL('/healthz', String(line.url));
    assert.equal(url.hostname, '[::1]');
    const status = await new Promise<number>((resolve, reject) => {
      request(url, { agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      })
        .on('error', reject)
        .end();
    });
    assert.equal(status, 200);
  });
});
