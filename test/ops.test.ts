// The shared ops server (src/ops.ts) on a real socket: each endpoint, a 404 for anything else, /readyz
// 503 with its reasons when not ready, HEAD without a body, the routes tried first, and a bind failure
// that names its key.
import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { ConfigError } from '../src/errors.js';
import { createMetricsRegistry } from '../src/metrics.js';
import { closeHttp, createOpsServer, listenHttp, type Readiness } from '../src/ops.js';

describe('ops server', () => {
  let readiness: Readiness = { ready: true, reasons: [] };
  let server: Server;
  let url: string;
  const metrics = createMetricsRegistry();

  before(async () => {
    server = createOpsServer({
      status: () => ({ tunnels: 2 }),
      readiness: () => readiness,
      metrics,
      memory: () => ({ extra: 7 }),
      routes: (_req, res, path) => {
        if (path !== '/own') return false;
        res.end('own');
        return true;
      },
    });
    url = await listenHttp(server, { host: '127.0.0.1', port: 0 }, 'opsListen');
  });
  after(() => closeHttp(server));

  test('/healthz is 200 with the status figures, JSON, no-store and nosniff', async () => {
    const res = await fetch(`${url}/healthz`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/json');
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(await res.text(), '{"ok":true,"tunnels":2}');
  });

  test('/readyz is 200 when ready, 503 with the reasons when not', async () => {
    const ready = await fetch(`${url}/readyz?probe=1`);
    assert.equal(ready.status, 200);
    assert.equal(await ready.text(), '{"ok":true,"tunnels":2}');
    readiness = { ready: false, reasons: ['draining'] };
    try {
      const res = await fetch(`${url}/readyz`);
      assert.equal(res.status, 503);
      assert.deepEqual(await res.json(), { ok: false, tunnels: 2, reasons: ['draining'] });
      // Liveness does not follow readiness.
      assert.equal((await fetch(`${url}/healthz`)).status, 200);
    } finally {
      readiness = { ready: true, reasons: [] };
    }
  });

  test('/metrics is the registry in Prometheus text', async () => {
    const res = await fetch(`${url}/metrics`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), metrics.contentType);
    assert.match(await res.text(), /^process_cpu_user_seconds_total /m);
  });

  test('/debug/memory is the memory report with what the caller adds', async () => {
    const res = await fetch(`${url}/debug/memory`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as Record<string, unknown>;
    assert.equal(body.extra, 7);
    assert.equal(typeof body.heapUsed, 'number');
    assert.equal(typeof body.reportConnections, 'number');
  });

  test('the routes given are tried first', async () => {
    assert.equal(await (await fetch(`${url}/own`)).text(), 'own');
  });

  test('anything else is a JSON 404', async () => {
    for (const path of ['/', '/healthz/x', '/metricsx', '/debug']) {
      const res = await fetch(`${url}${path}`);
      assert.equal(res.status, 404, path);
      assert.deepEqual(await res.json(), { error: 'not found' });
    }
  });

  test('HEAD answers the status without a body', async () => {
    readiness = { ready: false, reasons: ['no tunnel is up'] };
    try {
      for (const [path, status] of [
        ['/healthz', 200],
        ['/readyz', 503],
        ['/nope', 404],
      ] as const) {
        const { statusCode, body } = await head(`${url}${path}`);
        assert.equal(statusCode, status, path);
        assert.equal(body, '', path);
      }
    } finally {
      readiness = { ready: true, reasons: [] };
    }
  });

  test('a port in use is a ConfigError naming the key', async () => {
    const other = createServer();
    try {
      await assert.rejects(
        listenHttp(other, { host: '127.0.0.1', port: Number(new URL(url).port) }, 'opsListen'),
        (err: unknown) => err instanceof ConfigError && err.key === 'opsListen',
      );
    } finally {
      other.close();
    }
  });
});

describe('ops server without a readiness function', () => {
  test('/readyz is always 200', async () => {
    const server = createOpsServer({
      status: () => ({}),
      metrics: createMetricsRegistry(),
      memory: () => ({}),
    });
    try {
      const url = await listenHttp(server, { host: '127.0.0.1', port: 0 }, 'opsListen');
      const res = await fetch(`${url}/readyz`);
      assert.equal(res.status, 200);
      assert.equal(await res.text(), '{"ok":true}');
    } finally {
      await closeHttp(server);
    }
  });
});

function head(url: string): Promise<{ statusCode: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'HEAD', agent: false, timeout: 30_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ statusCode: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('HEAD timed out')));
    req.on('error', reject);
    req.end();
  });
}
