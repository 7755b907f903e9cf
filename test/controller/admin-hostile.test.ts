// The admin listener against hostile and careless clients, on a real `sluice controller` process: no
// input may end the process, every answer is a valid status, and an error answer leaves a keep-alive
// connection usable (or says `Connection: close` and closes it). Raw sockets for the framing, node's
// keep-alive http.Agent as Prometheus, the dashboard and the CLI use it, and a fast-check property
// (fixed seed) throwing random methods, paths, headers and bodies at it.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { MAX_BODY_BYTES } from '../../src/controller/admin-api.js';
import { RawHttpConnection, rawRequest, type RawResponse } from '../helpers/http-reader.js';
import { SluiceProcess } from '../helpers/sluice-procs.js';

const ADMIN_TOKEN = 'hostile-test-admin-token-0123456789';
const AUTH: [string, string] = ['Authorization', `Bearer ${ADMIN_TOKEN}`];
const HOST: [string, string] = ['Host', 'admin'];
// Every status the admin listener may answer with: the API's own, and node's for a malformed request.
const VALID = new Set([200, 201, 400, 401, 404, 405, 409, 413, 431]);

const dir = mkdtempSync(join(tmpdir(), 'sluice-admin-hostile-'));
let controller: SluiceProcess | undefined;
let port = 0;

before(async () => {
  const yaml = [
    'listen: 127.0.0.1:0',
    'tunnelListen: tcp://127.0.0.1:0',
    'adminListen: 127.0.0.1:0',
    `dataDir: ${JSON.stringify(join(dir, 'data'))}`,
    'clusters:',
    '  - name: seeded',
    '    tokens: ["hostile-seed-token-0123456789"]',
    'routes: []',
  ].join('\n');
  writeFileSync(join(dir, 'sluice.yaml'), yaml);
  controller = new SluiceProcess(['controller', '--config', join(dir, 'sluice.yaml')], {
    SLUICE_ADMIN_TOKEN: ADMIN_TOKEN,
  });
  const ready = await controller.waitLine(
    'the admin listener',
    (l) => l.event === 'listening' && l.listener === 'admin',
    60_000,
  );
  port = Number(new URL(String(ready.url)).port);
});

after(async () => {
  try {
    await controller?.stop('SIGTERM', 30_000);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** The controller is still running and its admin listener answers a probe on a new connection. */
async function assertAlive(): Promise<void> {
  assert.equal(controller!.child.exitCode, null, `the controller exited: ${controller!.stderr.slice(-2000)}`);
  assert.equal(controller!.child.signalCode, null);
  const conn = await RawHttpConnection.open(port);
  try {
    conn.write(rawRequest('GET', '/healthz', [HOST]));
    assert.equal((await conn.next())?.status, 200);
  } finally {
    conn.close();
  }
}

function json(r: RawResponse | null): { error?: { code?: string } } {
  assert.ok(r !== null, 'a response');
  return JSON.parse(r.body.toString('utf8')) as { error?: { code?: string } };
}

describe('an admin body over the limit', () => {
  test('is 413, and the controller lives on', async () => {
    const conn = await RawHttpConnection.open(port);
    try {
      const body = Buffer.alloc(MAX_BODY_BYTES + 10_000, 'a');
      const headers: [string, string][] = [HOST, AUTH, ['Content-Type', 'application/json']];
      conn.write(
        rawRequest('POST', '/api/clusters', [...headers, ['Content-Length', String(body.length)]], body),
      );
      const r = await conn.next();
      assert.equal(r?.status, 413);
      assert.equal(json(r).error?.code, 'payload_too_large');
    } finally {
      conn.close();
    }
    await assertAlive();
  });

  test('chunked, without a length: 413, and the controller lives on', async () => {
    const conn = await RawHttpConnection.open(port);
    try {
      const chunk = Buffer.alloc(16 * 1024, 'b');
      conn.write(rawRequest('POST', '/api/routes', [HOST, AUTH, ['Transfer-Encoding', 'chunked']]));
      for (let i = 0; i < 6; i++)
        conn.write(Buffer.concat([Buffer.from('4000\r\n'), chunk, Buffer.from('\r\n')]));
      conn.write('0\r\n\r\n');
      assert.equal((await conn.next())?.status, 413);
    } finally {
      conn.close();
    }
    await assertAlive();
  });

  test('far over the limit: 413 with Connection: close, read before the connection closes', async () => {
    const conn = await RawHttpConnection.open(port);
    try {
      const declared = 64 * 1024 * 1024;
      conn.write(rawRequest('POST', '/api/clusters', [HOST, AUTH, ['Content-Length', String(declared)]]));
      // Keep sending while the answer comes: the client of a big upload does not stop to listen.
      const piece = Buffer.alloc(64 * 1024, 'c');
      let sent = 0;
      const pump = setInterval(() => {
        if (sent < 4 * 1024 * 1024 && conn.write(piece)) sent += piece.length;
      }, 1);
      try {
        const r = await conn.next();
        assert.equal(r?.status, 413);
        assert.equal(r?.headers.connection, 'close');
        await conn.whenClosed();
      } finally {
        clearInterval(pump);
      }
    } finally {
      conn.close();
    }
    await assertAlive();
  });
});

describe('keep-alive after an error answer', () => {
  test('a raw connection carries a request after each of 401, 404, 405, 400 (bad JSON) and 413', async () => {
    const conn = await RawHttpConnection.open(port);
    try {
      const big = Buffer.alloc(MAX_BODY_BYTES + 1, 'x');
      const cases: [Buffer, number][] = [
        [rawRequest('GET', '/api/clusters', [HOST]), 401],
        // A body the server never reads: it must be skipped, not parsed as the next request.
        [
          rawRequest(
            'POST',
            '/api/clusters',
            [HOST, ['Content-Length', '27']],
            '{"name":"never-looked-at"}\n',
          ),
          401,
        ],
        [rawRequest('GET', '/api/nothing-here', [HOST, AUTH]), 404],
        [rawRequest('PUT', '/api/routes', [HOST, AUTH, ['Content-Length', '2']], '{}'), 405],
        [rawRequest('POST', '/api/clusters', [HOST, AUTH, ['Content-Length', '5']], '{nope'), 400],
        [rawRequest('POST', '/api/clusters', [HOST, AUTH, ['Content-Length', String(big.length)]], big), 413],
      ];
      for (const [bytes, status] of cases) {
        conn.write(bytes);
        const r = await conn.next();
        assert.equal(r?.status, status, bytes.subarray(0, 40).toString());
        assert.notEqual(r?.headers.connection, 'close', `${status} said Connection: close`);
        conn.write(rawRequest('GET', '/api/clusters', [HOST, AUTH]));
        const next = await conn.next();
        assert.equal(next?.status, 200, `the request after the ${status}`);
      }
      assert.equal(conn.closed, false);
    } finally {
      conn.close();
    }
  });

  test('pipelined behind an error answer, the next request is answered too', async () => {
    const conn = await RawHttpConnection.open(port);
    try {
      conn.write(
        Buffer.concat([
          rawRequest('POST', '/api/routes', [HOST, ['Content-Length', '11']], '{"host":1}\n'),
          rawRequest('GET', '/api/routes', [HOST, AUTH]),
        ]),
      );
      assert.equal((await conn.next())?.status, 401);
      const second = await conn.next();
      assert.equal(second?.status, 200);
      assert.deepEqual(json(second), { routes: [] });
    } finally {
      conn.close();
    }
  });

  test("node's keep-alive Agent reuses one socket across error answers", async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set<Socket>();
    const call = (method: string, path: string, token: string | null, body?: string | Buffer) =>
      new Promise<number>((resolve, reject) => {
        const req = request({
          port,
          host: '127.0.0.1',
          method,
          path,
          agent,
          headers: {
            ...(token === null ? {} : { authorization: `Bearer ${token}` }),
            ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          },
        });
        req.on('socket', (s: Socket) => sockets.add(s));
        req.on('error', reject);
        req.on('response', (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.end(body);
      });
    try {
      const steps: [string, string, string | null, string | Buffer | undefined, number][] = [
        ['GET', '/api/clusters', null, undefined, 401],
        ['GET', '/api/clusters', 'sluadm_wrong', undefined, 401],
        ['POST', '/api/clusters', null, '{"name":"a"}', 401],
        ['GET', '/api/nope', ADMIN_TOKEN, undefined, 404],
        ['DELETE', '/api/clusters/not-there', ADMIN_TOKEN, undefined, 404],
        ['POST', '/api/clusters', ADMIN_TOKEN, '{not json', 400],
        ['POST', '/api/clusters', ADMIN_TOKEN, Buffer.alloc(MAX_BODY_BYTES * 2, ' '), 413],
        ['GET', '/api/clusters', ADMIN_TOKEN, undefined, 200],
      ];
      for (const [method, path, token, body, status] of steps) {
        assert.equal(await call(method, path, token, body), status, `${method} ${path}`);
      }
      assert.equal(sockets.size, 1, 'every request went over the same connection');
    } finally {
      agent.destroy();
    }
  });
});

// --- the property: whatever arrives, the process stays up and the answer is a valid status ---

const METHODS = ['GET', 'POST', 'DELETE', 'PUT', 'PATCH', 'OPTIONS', 'HEAD'];
const PATHS = [
  '/api',
  '/api/',
  '/api/clusters',
  '/api/clusters/seeded',
  '/api/clusters/seeded/tokens',
  '/api/clusters/%zz/tokens',
  '/api/clusters/%E0%A4%A/tokens',
  '/api/tokens/tok_nope',
  '/api/routes',
  '/api/routes?host=a.example.test&path=/x',
  '/api/routes?host=%zz',
  '/api/tunnels',
  '/api/traffic',
  '/api/openapi.json',
  '/healthz',
  '/metrics',
  '/',
  '/nope',
];
const token = fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}$/);
const headerValue = fc.stringMatching(/^[\x20-\x7e]{0,40}$/).map((v) => v.trim());

interface Case {
  method: string;
  path: string;
  auth: string | null;
  contentType: string | null;
  extra: [string, string][];
  body: Buffer;
  /** How the body is framed: exact length, chunked, a length larger than what is sent, or none. */
  framing: 'length' | 'chunked' | 'short' | 'none';
  /** After writing: wait for the answer, half-close, or vanish. */
  ending: 'wait' | 'end' | 'destroy';
}

const bodies = fc.oneof(
  fc.constant(Buffer.alloc(0)),
  fc.jsonValue({ maxDepth: 3 }).map((v) => Buffer.from(JSON.stringify(v))),
  fc
    .record({
      host: fc.domain(),
      cluster: fc.constantFrom('seeded', 'nope'),
      target: fc.webUrl(),
      path: fc.webPath(),
    })
    .map((v) => Buffer.from(JSON.stringify(v))),
  fc.record({ name: fc.stringMatching(/^[a-z0-9-]{1,12}$/) }).map((v) => Buffer.from(JSON.stringify(v))),
  fc.string({ maxLength: 200 }).map((s) => Buffer.from(s)),
  fc.uint8Array({ maxLength: 512 }).map((a) => Buffer.from(a)),
  fc.integer({ min: MAX_BODY_BYTES - 2, max: 4 * MAX_BODY_BYTES }).map((n) => Buffer.alloc(n, '{')),
);

const cases: fc.Arbitrary<Case> = fc.record({
  method: fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...METHODS) }, { weight: 1, arbitrary: token }),
  path: fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...PATHS) },
    { weight: 1, arbitrary: fc.webPath().map((p) => `/api${p}`) },
    { weight: 1, arbitrary: fc.stringMatching(/^\/[\x21-\x7e]{0,60}$/) },
  ),
  auth: fc.constantFrom(
    `Bearer ${ADMIN_TOKEN}`,
    `Bearer ${ADMIN_TOKEN}`,
    'Bearer wrong',
    'Basic Zm9vOmJhcg==',
    'Bearer',
    null,
  ),
  contentType: fc.constantFrom(
    'application/json',
    'application/json; charset=utf-8',
    'text/plain',
    'x/y;;',
    null,
  ),
  extra: fc.array(fc.tuple(token, headerValue), { maxLength: 3 }),
  body: bodies,
  framing: fc.constantFrom('length', 'length', 'chunked', 'short', 'none'),
  ending: fc.constantFrom('wait', 'wait', 'wait', 'end', 'destroy'),
});

function encode(c: Case): Buffer {
  const headers: [string, string][] = [HOST];
  if (c.auth !== null) headers.push(['Authorization', c.auth]);
  if (c.contentType !== null) headers.push(['Content-Type', c.contentType]);
  // Names the test itself frames by are not left to chance.
  const framingNames = /^(?:content-length|transfer-encoding|host|connection|expect|upgrade)$/i;
  headers.push(...c.extra.filter(([name]) => !framingNames.test(name)));
  switch (c.framing) {
    case 'length':
      return rawRequest(c.method, c.path, [...headers, ['Content-Length', String(c.body.length)]], c.body);
    case 'short':
      return rawRequest(
        c.method,
        c.path,
        [...headers, ['Content-Length', String(c.body.length + 100)]],
        c.body,
      );
    case 'chunked': {
      const chunks = c.body.length === 0 ? '' : `${c.body.length.toString(16)}\r\n`;
      const body = Buffer.concat([
        Buffer.from(chunks),
        c.body,
        Buffer.from(c.body.length === 0 ? '0\r\n\r\n' : '\r\n0\r\n\r\n'),
      ]);
      return rawRequest(c.method, c.path, [...headers, ['Transfer-Encoding', 'chunked']], body);
    }
    case 'none':
      return rawRequest(c.method, c.path, headers);
  }
}

async function throwCase(c: Case): Promise<void> {
  const conn = await RawHttpConnection.open(port);
  // A body shorter than its length is a client that stopped sending: it half-closes or vanishes (one
  // that just waits is answered when the server's request timeout ends it).
  const ending = c.framing === 'short' && c.ending === 'wait' ? 'end' : c.ending;
  try {
    conn.write(encode(c));
    if (ending === 'destroy') return;
    if (ending === 'end') conn.socket.end();
    const r = await conn.next({ head: c.method === 'HEAD' });
    // Only a client that framed its request whole and waited is owed an answer.
    const owed = ending === 'wait';
    if (r === null) {
      assert.ok(!owed, `no answer to ${c.method} ${c.path}`);
      return;
    }
    assert.ok(
      VALID.has(r.status),
      `${c.method} ${c.path} answered ${r.status}: ${r.body.toString().slice(0, 200)}`,
    );
    const api = c.path === '/api' || c.path.startsWith('/api/');
    if (api && r.headers['content-type'] === 'application/json' && r.status >= 400 && c.method !== 'HEAD') {
      assert.equal(typeof json(r).error, 'object', 'an error answer is {error: ...}');
    }
    // An answer that keeps the connection must leave it usable.
    if (owed && r.headers.connection !== 'close') {
      conn.write(rawRequest('GET', '/healthz', [HOST]));
      assert.equal((await conn.next())?.status, 200, `the request after ${c.method} ${c.path} (${r.status})`);
    }
  } finally {
    conn.close();
  }
}

test('random methods, paths, headers and bodies: valid answers, the process stays up', async () => {
  await fc.assert(
    fc.asyncProperty(cases, async (c) => {
      await throwCase(c);
      assert.equal(
        controller!.child.exitCode,
        null,
        `the controller exited: ${controller!.stderr.slice(-2000)}`,
      );
    }),
    { numRuns: 200, seed: 0x51ce, endOnFailure: true },
  );
  await assertAlive();
});

test('the controller survived the whole file', async () => {
  await assertAlive();
});
