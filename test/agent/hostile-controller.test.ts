// The controller's stream metadata is input from across the tunnel (docs/http-over-streams.md): a real
// agent process, dialing a controller played by a raw peer, must reset a SYN whose head Node's HTTP
// client would refuse (or that breaks the request line or a header) with PROTOCOL_ERROR, on that stream
// only, and go on serving. Before this test a header value holding a control byte made http.request
// throw synchronously, and the exception ended the whole agent.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { ErrorCode } from '../../src/protocol/constants.js';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { type Outcome, RawController } from '../helpers/raw-controller.js';
import { SluiceProcess, Stack, TOKEN } from '../helpers/sluice-procs.js';
import { within } from '../helpers/wait.js';

let origin: Origin;
let controller: RawController;
let agent: SluiceProcess | undefined;

before(async () => {
  origin = await startOrigin('hostile');
  controller = await RawController.start();
  agent = new SluiceProcess(
    [
      'agent',
      '--controller',
      controller.url,
      '--tunnels',
      '1',
      '--name',
      'hostile',
      '--allow',
      `127.0.0.1:${origin.port}`,
    ],
    { SLUICE_TOKEN: TOKEN },
  );
  await controller.tunnel();
});

after(async () => {
  await agent?.stop('SIGKILL');
  await controller?.close();
  await origin?.close();
});

function meta(kind: 'http' | 'upgrade', head: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    kind,
    target: `http://127.0.0.1:${origin.port}`,
    client: '203.0.113.9:5000',
    requestId: 'hostile-1',
    head: { method: 'GET', path: '/headers', version: '1.1', headers: ['Host', 'app.test'], ...head },
  };
}

/** The agent's answer to a SYN with `m`; fails at once if the agent process exits instead. */
async function open(m: unknown): Promise<Outcome> {
  const exited = agent!.exited.then((code) => {
    throw new Error(`the agent exited (${code}); stderr: ${agent!.stderr.slice(-1000)}`);
  });
  return Promise.race([controller.open(m), exited]);
}

async function assertServed(what: string): Promise<void> {
  const outcome = await open(meta('http'));
  assert.equal(outcome.kind, 'response', `${what}: a good stream is served afterwards`);
  assert.equal((outcome as Extract<Outcome, { kind: 'response' }>).status, 200);
  assert.equal(agent!.child.exitCode, null, `${what}: the agent is still running`);
}

const BAD_HEADS: [string, Record<string, unknown>][] = [
  ['a control byte in a header value', { headers: ['Host', 'app.test', 'X-A', 'a\u0001b'] }],
  ['NUL in a header value', { headers: ['Host', 'app.test', 'X-A', 'a\u0000b'] }],
  ['CR LF in a header value', { headers: ['Host', 'app.test', 'X-A', 'a\r\nX-Injected: 1'] }],
  ['a bare LF in a header value', { headers: ['Host', 'app.test', 'X-A', 'a\nb'] }],
  ['DEL in a header value', { headers: ['Host', 'app.test', 'X-A', 'a\u007fb'] }],
  ['a character above U+00FF in a header value', { headers: ['Host', 'app.test', 'X-A', '\u20ac'] }],
  ['a space in a header name', { headers: ['Host', 'app.test', 'X A', 'b'] }],
  ['a colon in a header name', { headers: ['Host', 'app.test', 'X:A', 'b'] }],
  ['an empty header name', { headers: ['Host', 'app.test', '', 'b'] }],
  ['CR LF in a header name', { headers: ['Host', 'app.test', 'X\r\nY', 'b'] }],
  ['a non-ASCII header name', { headers: ['Host', 'app.test', 'X-\u00e9', 'b'] }],
  ['HTTP version 0.9', { version: '0.9' }],
  ['HTTP version "x"', { version: 'x' }],
  ['a space in the path', { path: '/a b' }],
  ['a control byte in the path', { path: '/a\u0001' }],
  ['a non-ASCII path', { path: '/\u00e9' }],
  ['a method that is no token', { method: 'GE T' }],
];

describe('a hostile controller against a real agent process', () => {
  for (const kind of ['http', 'upgrade'] as const) {
    for (const [what, head] of BAD_HEADS) {
      test(`${kind}: ${what} resets that stream with PROTOCOL_ERROR, and the agent serves on`, async () => {
        const outcome = await open(meta(kind, head));
        assert.equal(outcome.kind, 'rst', JSON.stringify(outcome).slice(0, 300));
        assert.equal((outcome as Extract<Outcome, { kind: 'rst' }>).code, ErrorCode.PROTOCOL_ERROR);
        await assertServed(what);
      });
    }
  }

  test('a target that is no string or is huge resets the stream', async () => {
    for (const target of [5, null, 'http://127.0.0.1/' + 'a'.repeat(4096)]) {
      const outcome = await open({ ...meta('http'), target });
      assert.deepEqual(
        outcome.kind === 'rst' ? outcome.code : outcome,
        ErrorCode.PROTOCOL_ERROR,
        String(target),
      );
    }
    await assertServed('bad targets');
  });

  test('a Trailer field on a request with no chunked body is dropped, not fatal', async () => {
    // Node's client throws on it when the request is not chunked; a real client can send it.
    for (const kind of ['http', 'upgrade'] as const) {
      for (const method of ['GET', 'POST']) {
        const headers = ['Host', 'app.test', 'Content-Length', '0', 'Trailer', 'X-Sum'];
        const outcome = await open(meta(kind, { method, headers }));
        assert.equal(outcome.kind, 'response', `${kind} ${method}: ${JSON.stringify(outcome).slice(0, 200)}`);
        const response = outcome as Extract<Outcome, { kind: 'response' }>;
        assert.equal(response.status, 200, `${kind} ${method}`);
        const seen = (JSON.parse(response.body.toString('utf8')) as { rawHeaders: string[] }).rawHeaders;
        assert.ok(!seen.some((h) => h.toLowerCase() === 'trailer'), 'the target saw no Trailer field');
      }
    }
    await assertServed('Trailer');
  });

  test('what a field may hold is still served: HTAB and obs-text in values, HTTP/1.0', async () => {
    const headers = ['Host', 'app.test', 'X-Tab', 'a\tb', 'X-Latin', 'caf\u00e9', 'X-Empty', ''];
    for (const head of [{ headers }, { version: '1.0' }]) {
      const outcome = await open(meta('http', head));
      assert.equal(outcome.kind, 'response', JSON.stringify(head));
      assert.equal((outcome as Extract<Outcome, { kind: 'response' }>).status, 200);
    }
    const outcome = (await open(meta('http', { headers }))) as Extract<Outcome, { kind: 'response' }>;
    const seen = (JSON.parse(outcome.body.toString('utf8')) as { rawHeaders: string[] }).rawHeaders;
    assert.deepEqual(seen.slice(seen.indexOf('X-Tab'), seen.indexOf('X-Tab') + 6), headers.slice(2));
  });
});

describe('the same through the public edge', () => {
  let stack: Stack | undefined;
  after(async () => {
    await stack?.stop();
  });

  test('a client GET carrying a Trailer field is answered, and the agent lives on', async () => {
    stack = await Stack.start({ routes: [{ host: 'app.test', target: origin.url }], tunnels: 1 });
    // A raw socket: Node's own client refuses to send this, curl and browsers do not.
    for (let i = 0; i < 2; i++) {
      const socket = connect(stack.port, '127.0.0.1');
      socket.write('GET /headers HTTP/1.1\r\nHost: app.test\r\nTrailer: X-Sum\r\nConnection: close\r\n\r\n');
      let text = '';
      socket.setEncoding('latin1').on('data', (c: string) => (text += c));
      await within(once(socket, 'close'), 30_000, 'the answer');
      assert.match(text, /^HTTP\/1\.1 200 /, text.slice(0, 300));
    }
    assert.equal(stack.agent!.child.exitCode, null);
  });
});
