// The agent's undici path (deliver-undici.ts, issue #17) where it differs from node:http: which heads
// it takes, a kept-alive connection the target drops as it is reused, answers undici refuses (a 100
// nobody asked for, a 101), and pools that close once unused. An in-process agent, a controller played
// by a raw peer, and targets written on raw sockets so that each misbehaves exactly as described.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type LookupFunction, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { type AgentHandle, startAgent } from '../../src/agent/agent.js';
import { loadAgentConfig } from '../../src/agent/config.js';
import { dispatchable, TargetPools } from '../../src/agent/deliver-undici.js';
import {
  decodeCodeReason,
  encodeFrame,
  encodeJsonFrame,
  encodePing,
  encodeRst,
} from '../../src/protocol/codec.js';
import { ErrorCode, Flag, FrameType } from '../../src/protocol/constants.js';
import { encodeBodyHeader, RECORD_HEADER_SIZE, RecordKind } from '../../src/proxy/envelope.js';
import type { RequestHead } from '../../src/proxy/meta.js';
import { listenOnLoopback } from '../helpers/listen.js';
import { type Outcome, RawController } from '../helpers/raw-controller.js';
import type { RawFrame, RawPeer } from '../helpers/raw-peer.js';
import { within } from '../helpers/wait.js';

const head = (headers: string[], extra: Partial<RequestHead> = {}): RequestHead => ({
  method: 'GET',
  path: '/',
  version: '1.1',
  headers,
  ...extra,
});

describe('dispatchable: what undici sends as node:http would, and what stays on node:http', () => {
  test('a plain GET and a POST with a Content-Length go to undici, with the length', () => {
    assert.equal(dispatchable(head(['Host', 'a.test', 'Accept', '*/*'])), -1);
    assert.equal(dispatchable(head(['host', 'a.test', 'Content-Length', '12'], { method: 'POST' })), 12);
  });

  test('chunked bodies (request trailers), Expect, and framing or connection fields stay on node:http', () => {
    assert.equal(dispatchable(head(['Host', 'a.test'], { chunked: true })), undefined);
    for (const name of ['Expect', 'Transfer-Encoding', 'Connection', 'Keep-Alive', 'Upgrade']) {
      assert.equal(dispatchable(head(['Host', 'a.test', name, 'x'])), undefined, name);
    }
  });

  test('heads undici would refuse or change stay on node:http: *, no Host or two, odd Content-Length', () => {
    assert.equal(dispatchable(head(['Host', 'a.test'], { method: 'OPTIONS', path: '*' })), undefined);
    assert.equal(dispatchable(head([])), undefined);
    assert.equal(dispatchable(head(['Host', 'a.test', 'HOST', 'b.test'])), undefined);
    assert.equal(dispatchable(head(['Host', 'a', 'Content-Length', '1', 'content-length', '1'])), undefined);
    assert.equal(dispatchable(head(['Host', 'a', 'Content-Length', '+1'])), undefined);
    assert.equal(dispatchable(head(['Host', 'a', 'Content-Length', ''])), undefined);
  });
});

/** A target on raw sockets: `answer` gets each connection's requests, by their order on it. */
interface RawTarget {
  server: Server;
  port: number;
  connections: number;
  requests: number;
}

const RESPONSE = (body: string): string =>
  `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nContent-Type: text/plain\r\n\r\n${body}`;

async function rawTarget(answer: (socket: Socket, nth: number, t: RawTarget) => void): Promise<RawTarget> {
  const t: RawTarget = { server: createServer(), port: 0, connections: 0, requests: 0 };
  t.server.on('connection', (socket) => {
    t.connections++;
    let nth = 0;
    let seen = '';
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      seen += chunk.toString('latin1');
      // One request head per blank line; these requests have no body.
      while (seen.includes('\r\n\r\n')) {
        seen = seen.slice(seen.indexOf('\r\n\r\n') + 4);
        t.requests++;
        answer(socket, nth++, t);
      }
    });
  });
  t.port = await listenOnLoopback(t.server);
  return t;
}

let controller: RawController;
let agent: AgentHandle | undefined;
const targets: RawTarget[] = [];
let reuseDropper: RawTarget;
// The same, for POSTs only (its counts start at 0 for that test).
let postDropper: RawTarget;
// The same again, for the POSTs that stay on node:http (an Expect field).
let expectPostDropper: RawTarget;
let unaskedContinue: RawTarget;
// The same target again, for POSTs only (its counts start at 0 for that test).
let unaskedContinuePost: RawTarget;
let unaskedSwitch: RawTarget;
let earlyAnswer: RawTarget;
// Answers a GET with 'first' and keeps the connection; answers a PUT, once its body is in, with that body.
let echoPut: RawTarget & { sockets: Socket[] };
// Streams `GET /big` in 1 MiB blocks, each once the last has left (backpressure), up to 256 MiB.
let big: HttpServer;
let bigPort = 0;
const MiB = 1024 * 1024;
const bigState = { written: 0, closed: null as Promise<unknown> | null };

before(async () => {
  // Answers the first request of each connection and keeps it alive; a second request on the same
  // connection finds it closed under it, as when the target's idle timer fires just as it is reused.
  reuseDropper = await rawTarget((socket, nth) => {
    if (nth === 0) socket.write(RESPONSE('first'));
    else socket.destroy();
  });
  postDropper = await rawTarget((socket, nth) => {
    if (nth === 0) socket.write(RESPONSE('first'));
    else socket.destroy();
  });
  expectPostDropper = await rawTarget((socket, nth) => {
    if (nth === 0) socket.write(RESPONSE('first'));
    else socket.destroy();
  });
  // A 100 Continue to a GET that sent no Expect, then the answer: RFC 9110 §15.2 has clients take it.
  unaskedContinue = await rawTarget((socket) => {
    socket.write(`HTTP/1.1 100 Continue\r\n\r\n${RESPONSE('after continue')}`);
  });
  unaskedContinuePost = await rawTarget((socket) => {
    socket.write(`HTTP/1.1 100 Continue\r\n\r\n${RESPONSE('after continue')}`);
  });
  // A 101 to a request that asked for no upgrade.
  unaskedSwitch = await rawTarget((socket) => {
    socket.end('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: other\r\n\r\n');
  });
  // Answers 413 as soon as a request head arrives, and reads (and drops) whatever body follows.
  earlyAnswer = await rawTarget((socket) => {
    socket.write('HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n');
  });
  echoPut = Object.assign(await rawTarget(() => {}), { sockets: [] as Socket[] });
  echoPut.server.removeAllListeners('connection');
  echoPut.server.on('connection', (socket) => {
    echoPut.connections++;
    echoPut.sockets.push(socket);
    socket.on('error', () => {});
    let seen = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      seen = Buffer.concat([seen, chunk]);
      for (let turn = 0; turn < 100; turn++) {
        const end = seen.indexOf('\r\n\r\n');
        if (end < 0) return;
        const text = seen.subarray(0, end).toString('latin1');
        const length = Number(/content-length: *(\d+)/i.exec(text)?.[1] ?? 0);
        if (seen.length < end + 4 + length) return;
        const body = seen.subarray(end + 4, end + 4 + length).toString('latin1');
        seen = seen.subarray(end + 4 + length);
        echoPut.requests++;
        socket.write(RESPONSE(text.startsWith('PUT') ? `got ${body}` : 'first'));
      }
    });
  });
  targets.push(
    reuseDropper,
    postDropper,
    expectPostDropper,
    echoPut,
    unaskedContinue,
    unaskedContinuePost,
    unaskedSwitch,
    earlyAnswer,
  );
  big = createHttpServer((req, res) => {
    bigState.closed = once(res, 'close');
    const block = Buffer.alloc(MiB, 0x61);
    const more = (): void => {
      while (bigState.written < 256 * MiB && !res.destroyed) {
        bigState.written += MiB;
        if (!res.write(block)) return;
      }
      res.end();
    };
    res.on('drain', more);
    more();
  });
  bigPort = await listenOnLoopback(big);
  controller = await RawController.start();
  const config = loadAgentConfig({
    flags: {
      controller: controller.url,
      token: 'undici-token-0123456789',
      name: 'undici',
      tunnels: '1',
      allow: [...targets.map((t) => `127.0.0.1:${t.port}`), `127.0.0.1:${bigPort}`],
    },
    env: {},
  });
  agent = await startAgent(config, pino({ level: 'silent' }));
  await controller.tunnel();
});

after(async () => {
  await agent?.close(0);
  await controller?.close();
  for (const t of targets) t.server.close();
  big?.closeAllConnections();
  big?.close();
});

const meta = (port: number, id: string, path = '/') => ({
  kind: 'http',
  target: `http://127.0.0.1:${port}`,
  client: '203.0.113.9:5000',
  requestId: id,
  head: { method: 'GET', path, version: '1.1', headers: ['Host', 'app.test'] },
});

function response(outcome: Outcome): Extract<Outcome, { kind: 'response' }> {
  assert.equal(outcome.kind, 'response', JSON.stringify(outcome).slice(0, 300));
  return outcome as Extract<Outcome, { kind: 'response' }>;
}

describe('the agent over undici, against targets that misbehave', () => {
  test('a kept-alive connection the target drops as it is reused: the request is sent again, on a new one', async () => {
    for (let i = 0; i < 5; i++) {
      const answer = response(await controller.open(meta(reuseDropper.port, `reuse-${i}`)));
      assert.equal(answer.status, 200);
      assert.equal(answer.body.toString(), 'first');
    }
    // Every request after the first found the previous connection alive, was dropped there, and was
    // answered on a fresh one: one retry each, never more.
    assert.equal(reuseDropper.connections, 5);
    assert.equal(reuseDropper.requests, 9);
  });

  test('a POST the target drops on a reused connection is not sent again: the client gets the reset, the target it once', async () => {
    const post = (id: string) => {
      const m = meta(postDropper.port, id);
      return { ...m, head: { ...m.head, method: 'POST' } };
    };
    for (let i = 0; i < 3; i++) {
      // A fresh connection answers the first POST; the second finds it alive and is dropped there.
      const first = response(await controller.open(post(`post-${i}-a`)));
      assert.equal(first.status, 200);
      const second = await controller.open(post(`post-${i}-b`));
      assert.equal(second.kind, 'rst', `POST ${i}: ${JSON.stringify(second).slice(0, 200)}`);
    }
    // Two POSTs per round reached the target, each once: none was replayed on a new connection.
    assert.equal(postDropper.requests, 6);
    assert.equal(postDropper.connections, 3);
  });

  test('the same POST on the node:http path (Expect keeps it off undici) is not sent again either', async () => {
    const post = (id: string) => {
      const m = meta(expectPostDropper.port, id);
      const headers = [...m.head.headers, 'Content-Length', '0', 'Expect', '100-continue'];
      return { ...m, head: { ...m.head, method: 'POST', headers } };
    };
    assert.equal(dispatchable(post('x').head), undefined, 'node:http serves it');
    for (let i = 0; i < 3; i++) {
      const first = response(await controller.open(post(`expect-post-${i}-a`)));
      assert.equal(first.status, 200);
      const second = await controller.open(post(`expect-post-${i}-b`));
      assert.equal(second.kind, 'rst', `POST ${i}: ${JSON.stringify(second).slice(0, 200)}`);
    }
    assert.equal(expectPostDropper.requests, 6);
    assert.equal(expectPostDropper.connections, 3);
  });

  test('a 100 Continue nobody asked for is taken, and the final answer relayed', async () => {
    for (let i = 0; i < 3; i++) {
      const answer = response(await controller.open(meta(unaskedContinue.port, `continue-${i}`)));
      assert.equal(answer.status, 200);
      assert.equal(answer.body.toString(), 'after continue');
    }
  });

  test('a POST with no body answered with an unasked 100 is not sent again: the target had it whole', async () => {
    for (let i = 0; i < 3; i++) {
      const m = meta(unaskedContinuePost.port, `continue-post-${i}`);
      const outcome = await controller.open({ ...m, head: { ...m.head, method: 'POST' } });
      // The target may have acted on it: node:http must not send it a second time to read the answer.
      assert.equal(outcome.kind, 'rst', `POST ${i}: ${JSON.stringify(outcome).slice(0, 200)}`);
    }
    assert.equal(unaskedContinuePost.requests, 3);
  });

  test('a 101 to a plain request: HEAD 101 and FIN at once, as node:http did, for the 502 of the controller', async () => {
    const peer = await controller.tunnel();
    const id = 10_000;
    const chunks: Buffer[] = [];
    const ended = new Promise<void>((resolve, reject) => {
      peer.on('frame', (f: RawFrame) => {
        if (f.streamId !== id) return;
        if (f.type === FrameType.RST) reject(new Error(`reset: ${decodeCodeReason(f.payload).reason}`));
        if (f.type !== FrameType.DATA) return;
        chunks.push(f.payload);
        if ((f.flags & Flag.FIN) !== 0) resolve();
      });
    });
    peer.send(encodeJsonFrame(FrameType.SYN, id, meta(unaskedSwitch.port, 'switch')));
    peer.send(encodeFrame(FrameType.DATA, Flag.FIN, id, Buffer.alloc(0)));
    await within(ended, 10_000, 'the HEAD 101 and FIN');
    const bytes = Buffer.concat(chunks);
    assert.equal(bytes[0], RecordKind.HEAD);
    const length = bytes.readUInt32BE(1);
    const head = JSON.parse(bytes.subarray(RECORD_HEADER_SIZE, RECORD_HEADER_SIZE + length).toString());
    assert.equal(head.status, 101);
    assert.equal(bytes.length, RECORD_HEADER_SIZE + length, 'nothing follows the HEAD');
  });
});

describe('the agent over undici: backpressure and a client that leaves', () => {
  // How long the target may go without sending a block before it counts as stalled.
  const QUIET_MS = 1_500;

  test('a stream that grants no window stalls the target; its reset closes the target request', async () => {
    const peer = await controller.tunnel();
    const id = 20_000;
    peer.send(encodeJsonFrame(FrameType.SYN, id, meta(bigPort, 'big', '/big')));
    peer.send(encodeFrame(FrameType.DATA, Flag.FIN, id, Buffer.alloc(0)));
    // No WINDOW_UPDATE is ever sent: the agent may send the first window, then must stop reading.
    let last = -1;
    for (let i = 0; i < 256 && bigState.written !== last; i++) {
      last = bigState.written;
      await sleep(QUIET_MS);
    }
    assert.ok(bigState.written > 0, 'the target sent nothing');
    assert.ok(bigState.written <= 32 * MiB, `the target wrote ${bigState.written / MiB} MiB unread`);
    const closed = bigState.closed!;
    peer.send(encodeRst(id, ErrorCode.CANCEL, 'client went away'));
    await within(closed, 10_000, 'the target to see its request closed');
  });
});

describe('the agent over undici: a target that answers before the body is in', () => {
  test('the rest of the body is read and dropped, so the stream finishes instead of stalling', async () => {
    const peer = await controller.tunnel();
    const id = 30_000;
    const total = 16 * MiB;
    const head = {
      ...meta(earlyAnswer.port, 'early', '/upload').head,
      method: 'POST',
      headers: ['Host', 'app.test', 'Content-Length', String(total)],
    };
    let answered: (status: number) => void = () => {};
    const status = new Promise<number>((resolve) => (answered = resolve));
    let available = 4 * MiB - RECORD_HEADER_SIZE; // the agent's window, the default, less the record header
    let credited: () => void = () => {};
    peer.on('frame', (f: RawFrame) => {
      if (f.streamId !== id) return;
      if (f.type === FrameType.WINDOW_UPDATE) {
        available += f.payload.readUInt32BE(0);
        credited();
      } else if (f.type === FrameType.DATA && f.payload.length > 0 && f.payload[0] === RecordKind.HEAD) {
        const length = f.payload.readUInt32BE(1);
        answered(
          JSON.parse(f.payload.subarray(RECORD_HEADER_SIZE, RECORD_HEADER_SIZE + length).toString()).status,
        );
      }
    });
    peer.send(encodeJsonFrame(FrameType.SYN, id, { ...meta(earlyAnswer.port, 'early'), head }));
    peer.send(encodeFrame(FrameType.DATA, 0, id, encodeBodyHeader(total)));
    // The first MiB goes at once (undici sends the head with the first body bytes), the rest after the
    // answer, as the agent's credit allows. Held paused after the answer, the agent would grant no more
    // than the first window, and this loop would wait for credit that never comes.
    let sent = 0;
    const piece = Buffer.alloc(64 * 1024, 0x62);
    for (; sent < MiB; sent += piece.length, available -= piece.length) {
      peer.send(encodeFrame(FrameType.DATA, 0, id, piece));
    }
    assert.equal(await within(status, 10_000, 'the 413'), 413);
    for (let turn = 0; sent < total && turn < 10_000; turn++) {
      if (available < piece.length) {
        const more = new Promise<void>((resolve) => (credited = resolve));
        await within(more, 10_000, `credit for the body after ${sent / MiB} MiB`);
        continue;
      }
      peer.send(encodeFrame(FrameType.DATA, 0, id, piece));
      sent += piece.length;
      available -= piece.length;
    }
    assert.equal(sent, total);
    peer.send(encodeFrame(FrameType.DATA, Flag.FIN, id, Buffer.alloc(0)));
  });
});

/** The bytes the agent sends on stream `id` up to its FIN; rejects on its RST. */
function answerOf(peer: RawPeer, id: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  return new Promise<Buffer>((resolve, reject) => {
    const onFrame = (f: RawFrame): void => {
      if (f.streamId !== id) return;
      if (f.type === FrameType.RST) reject(new Error(`reset: ${decodeCodeReason(f.payload).reason}`));
      if (f.type === FrameType.DATA) chunks.push(f.payload);
      if (f.type === FrameType.RST || (f.type === FrameType.DATA && (f.flags & Flag.FIN) !== 0)) {
        peer.off('frame', onFrame);
        resolve(Buffer.concat(chunks));
      }
    };
    peer.on('frame', onFrame);
  });
}

describe('the agent over undici: a replay and the body that comes meanwhile', () => {
  test('a PUT whose kept-alive connection is reset before its body came is replayed whole', async () => {
    const peer = await controller.tunnel();
    for (let i = 0; i < 3; i++) {
      // A GET leaves an idle kept-alive connection; the PUT waits on it for its body.
      // Stream ids above those of the tests before (the agent takes only rising ones).
      const id = 40_000 + 4 * i;
      const got = answerOf(peer, id);
      peer.send(encodeJsonFrame(FrameType.SYN, id, meta(echoPut.port, `echo-get-${i}`)));
      peer.send(encodeFrame(FrameType.DATA, Flag.FIN, id, Buffer.alloc(0)));
      assert.ok((await within(got, 10_000, `GET ${i}'s answer`)).toString('latin1').includes('first'));
      const kept = echoPut.sockets.at(-1)!;
      const put = id + 2;
      const answer = answerOf(peer, put);
      const ponged = new Promise<void>((resolve) => {
        const onFrame = (f: RawFrame): void => {
          if (f.type !== FrameType.PING || (f.flags & Flag.ACK) === 0) return;
          peer.off('frame', onFrame);
          resolve();
        };
        peer.on('frame', onFrame);
      });
      const m = meta(echoPut.port, `echo-put-${i}`);
      const headers = ['Host', 'app.test', 'Content-Length', '5'];
      peer.send(encodeJsonFrame(FrameType.SYN, put, { ...m, head: { ...m.head, method: 'PUT', headers } }));
      // The agent answers the PING after it took the SYN: the PUT is then on the kept connection.
      peer.send(encodePing(false, Buffer.alloc(8)));
      await within(ponged, 10_000, 'the PING answer');
      // The reset reaches the agent first, the body right after: it comes while the replay is pending.
      kept.resetAndDestroy();
      const body = Buffer.concat([encodeBodyHeader(5), Buffer.from('hello')]);
      peer.send(encodeFrame(FrameType.DATA, 0, put, body));
      peer.send(encodeFrame(FrameType.DATA, Flag.FIN, put, Buffer.alloc(0)));
      const bytes = await within(answer, 10_000, `PUT ${i}'s answer`);
      const length = bytes.readUInt32BE(1);
      const head = JSON.parse(bytes.subarray(RECORD_HEADER_SIZE, RECORD_HEADER_SIZE + length).toString());
      assert.equal(head.status, 200);
      assert.ok(
        bytes.toString('latin1').includes('got hello'),
        `PUT ${i}: the whole body reached the target`,
      );
    }
  });
});

describe('TargetPools', () => {
  let origin: HttpServer;
  let port: number;

  before(async () => {
    origin = createHttpServer((req, res) => res.end(`seen ${req.headers.host}`));
    port = await listenOnLoopback(origin);
  });

  after(() => {
    origin.closeAllConnections();
    origin.close();
  });

  test('one pool per target, SNI name and DNS check; a pool is closed once it holds nothing', async () => {
    const pools = new TargetPools(4);
    const base = { https: false, host: '127.0.0.1', port, serverName: undefined, lookup: undefined };
    const target = { ...base, connectTimeoutMs: 5_000 };
    const a = pools.get(target);
    assert.equal(pools.get({ ...target }), a, 'the same target gets the same pool');
    assert.notEqual(pools.get({ ...target, https: true }), a, 'https:// gets a pool of its own');
    assert.notEqual(
      pools.get({ ...target, lookup: (() => {}) as LookupFunction }),
      a,
      'another DNS check gets its own',
    );
    assert.equal(pools.size, 3);
    try {
      const { statusCode, body } = await a.request({ path: '/', method: 'GET', headers: ['Host', 'x.test'] });
      assert.equal(statusCode, 200);
      assert.equal(await body.text(), 'seen x.test');
      assert.equal(a.stats.connected, 1, 'the connection is kept alive');
      const closed = once(a, 'disconnect');
      origin.closeIdleConnections();
      await within(closed, 10_000, 'the pool to see its connection close');
      assert.equal(pools.get(target) === a, false, 'the unused pool was closed and replaced');
    } finally {
      pools.destroy();
    }
  });
});
