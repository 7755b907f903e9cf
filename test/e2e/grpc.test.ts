// h2c:// targets: a real @grpc/grpc-js client on the controller's TLS listener (HTTP/2), a real grpc-js
// server behind an h2c:// route, and real controller and agent processes between them:
// - unary, server-streaming (1000 messages), client-streaming and bidirectional calls;
// - a non-OK status with a message passes through (code and details, from the trailers);
// - a deadline surfaces DEADLINE_EXCEEDED, and the server got the deadline (grpc-timeout);
// - a client cancel resets the call at the server, which sees it cancelled;
// - 1,000 concurrent bidirectional calls at once;
// - a 4 MiB message both ways;
// - a plain HTTP/1.1 client through the edge reaches an h2c target (the agent converts), trailers and
//   all, and two requests share one HTTP/2 session to the target.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer as createH2Server, type Http2Server, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { issueCert, makeTestCerts, type TestCerts } from '../helpers/certs.js';
import { ask, Stack, tempDir } from '../helpers/sluice-procs.js';
import { EVENT_MS, scaled, within } from '../helpers/wait.js';

const HOST = 'grpc.test';
const MiB = 1024 * 1024;
const identity = (b: Buffer): Buffer => b;

function method(name: string, requestStream: boolean, responseStream: boolean) {
  return {
    path: `/sluice.test.Echo/${name}`,
    requestStream,
    responseStream,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  };
}

const SERVICE = {
  unary: method('Unary', false, false),
  serverStream: method('ServerStream', false, true),
  clientStream: method('ClientStream', true, false),
  bidi: method('Bidi', true, true),
} satisfies grpc.ServiceDefinition;

type EchoClient = grpc.Client & {
  unary(
    req: Buffer,
    meta: grpc.Metadata,
    options: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null, res?: Buffer) => void,
  ): grpc.ClientUnaryCall;
  serverStream(req: Buffer): grpc.ClientReadableStream<Buffer>;
  clientStream(cb: (err: grpc.ServiceError | null, res?: Buffer) => void): grpc.ClientWritableStream<Buffer>;
  bidi(): grpc.ClientDuplexStream<Buffer, Buffer>;
};

/** A call the server holds without answering, and what it saw of it. */
interface HeldCall {
  deadline: grpc.Deadline;
  cancelled: Promise<void>;
}

let certs: TestCerts;
let server: grpc.Server;
let stack: Stack;
let client: EchoClient;
let tlsPort = 0;
const held = new Map<string, (call: HeldCall) => void>();
let h2Origin: Http2Server;
let h2Sessions = 0;

function holdCall(tag: string): Promise<HeldCall> {
  return within(
    new Promise((resolve) => held.set(tag, resolve)),
    scaled(EVENT_MS),
    `the server to get ${tag}`,
  );
}

function startGrpcServer(): Promise<number> {
  server = new grpc.Server({ 'grpc.max_receive_message_length': 8 * MiB });
  server.addService(SERVICE, {
    unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      const text = call.request.toString('latin1');
      if (text === 'fail') {
        cb({ code: grpc.status.FAILED_PRECONDITION, details: 'order 42 is already shipped' });
        return;
      }
      if (text.startsWith('hold:')) {
        const cancelled = new Promise<void>((resolve) => call.on('cancelled', () => resolve()));
        held.get(text)?.({ deadline: call.getDeadline(), cancelled });
        return;
      }
      cb(null, call.request);
    },
    serverStream: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      const n = Number(call.request.toString());
      for (let i = 0; i < n; i++) call.write(Buffer.from(`message ${i}`));
      call.end();
    },
    clientStream: (call: grpc.ServerReadableStream<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      const hash = createHash('sha256');
      let count = 0;
      call.on('data', (b: Buffer) => {
        count++;
        hash.update(b);
      });
      call.on('end', () => cb(null, Buffer.from(`${count} ${hash.digest('hex')}`)));
    },
    bidi: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      call.on('data', (b: Buffer) => call.write(Buffer.concat([Buffer.from('echo '), b])));
      call.on('end', () => call.end());
    },
  });
  return new Promise((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) =>
      err === null ? resolve(port) : reject(err),
    ),
  );
}

/** A plain HTTP/2 cleartext service: its body's sha256 and size, the sum in a trailer. */
function startH2Origin(): Promise<number> {
  h2Origin = createH2Server();
  h2Origin.on('session', () => h2Sessions++);
  h2Origin.on('stream', (stream: ServerHttp2Stream, headers) => {
    const hash = createHash('sha256');
    let size = 0;
    stream.on('data', (b: Buffer) => {
      size += b.length;
      hash.update(b);
    });
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'text/plain' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'x-sha256': hash.digest('hex') }));
      stream.end(
        `${String(headers[':method'])} ${String(headers[':path'])} ${String(headers[':authority'])} ${size}`,
      );
    });
  });
  return new Promise((resolve) =>
    h2Origin.listen(0, '127.0.0.1', () => resolve((h2Origin.address() as AddressInfo).port)),
  );
}

before(async () => {
  certs = await makeTestCerts();
  const dir = tempDir();
  const leaf = await issueCert([HOST, 'plain-h2.test'], { dir, file: 'grpc' });
  const [grpcPort, h2Port] = await Promise.all([startGrpcServer(), startH2Origin()]);
  stack = await Stack.start({
    routes: [
      { host: HOST, target: `h2c://127.0.0.1:${grpcPort}` },
      { host: 'plain-h2.test', target: `h2c://127.0.0.1:${h2Port}` },
    ],
    extraYaml: [
      // 1,000 calls at once from one address: over the default per-client cap of 256 in flight.
      'http:',
      '  maxRequestsPerClient: 2000',
      'tls:',
      '  listen: 127.0.0.1:0',
      '  certs:',
      `    - { cert: ${JSON.stringify(leaf.certFile)}, key: ${JSON.stringify(leaf.keyFile)} }`,
    ].join('\n'),
  });
  const line = await stack.controller.waitLine(
    'the TLS listener',
    (l) => l.event === 'listening' && l.listener === 'tls',
  );
  tlsPort = Number(new URL(String(line.url)).port);
  client = newClient();
});

/** A client on the TLS listener; each with `grpc.use_local_subchannel_pool` has its own connection. */
function newClient(options: grpc.ChannelOptions = {}): EchoClient {
  const Client = grpc.makeGenericClientConstructor(SERVICE, 'Echo');
  return new Client(`127.0.0.1:${tlsPort}`, grpc.credentials.createSsl(Buffer.from(certs.ca)), {
    'grpc.ssl_target_name_override': HOST,
    'grpc.default_authority': HOST,
    'grpc.max_receive_message_length': 8 * MiB,
    'grpc.max_send_message_length': 8 * MiB,
    ...options,
  }) as unknown as EchoClient;
}

after(async () => {
  client?.close();
  server?.forceShutdown();
  h2Origin?.close();
  await stack?.stop();
});

function unary(req: Buffer, options: grpc.CallOptions = {}): Promise<Buffer> {
  return within(
    new Promise<Buffer>((resolve, reject) => {
      client.unary(req, new grpc.Metadata(), options, (err, res) =>
        err === null ? resolve(res!) : reject(err),
      );
    }),
    scaled(EVENT_MS),
    'a unary call',
  );
}

function collect<T>(stream: NodeJS.ReadableStream): Promise<T[]> {
  return within(
    new Promise<T[]>((resolve, reject) => {
      const items: T[] = [];
      stream.on('data', (item: T) => items.push(item));
      stream.on('end', () => resolve(items));
      stream.on('error', reject);
    }),
    scaled(EVENT_MS),
    'a stream of messages',
  );
}

describe('gRPC through an h2c:// target', () => {
  test('unary', async () => {
    assert.equal((await unary(Buffer.from('hello'))).toString(), 'hello');
    assert.equal((await unary(Buffer.from('again'))).toString(), 'again');
  });

  test('server-streaming: 1000 messages in order', async () => {
    const messages = await collect<Buffer>(client.serverStream(Buffer.from('1000')));
    assert.equal(messages.length, 1000);
    messages.forEach((m, i) => assert.equal(m.toString(), `message ${i}`));
  });

  test('client-streaming', async () => {
    const expected = createHash('sha256');
    const reply = within(
      new Promise<Buffer>((resolve, reject) => {
        const call = client.clientStream((err, res) => (err === null ? resolve(res!) : reject(err)));
        for (let i = 0; i < 200; i++) {
          const b = Buffer.from(`part ${i};`);
          expected.update(b);
          call.write(b);
        }
        call.end();
      }),
      scaled(EVENT_MS),
      'the client-streaming answer',
    );
    assert.equal((await reply).toString(), `200 ${expected.digest('hex')}`);
  });

  test('bidirectional: each message answered while the call stays open', async () => {
    const call = client.bidi();
    const replies: string[] = [];
    const next = (): Promise<string> =>
      within(
        new Promise<string>((resolve, reject) => {
          call.once('data', (b: Buffer) => resolve(b.toString()));
          call.once('error', reject);
        }),
        scaled(EVENT_MS),
        'a bidi reply',
      );
    for (let i = 0; i < 20; i++) {
      const reply = next();
      call.write(Buffer.from(`ping ${i}`));
      replies.push(await reply);
    }
    const ended = collect<Buffer>(call);
    call.end();
    assert.deepEqual(await ended, []);
    assert.deepEqual(
      replies,
      Array.from({ length: 20 }, (_, i) => `echo ping ${i}`),
    );
  });

  test('a non-OK status with a message passes through', async () => {
    await assert.rejects(unary(Buffer.from('fail')), (err: grpc.ServiceError) => {
      assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
      assert.equal(err.details, 'order 42 is already shipped');
      return true;
    });
  });

  test('a deadline surfaces DEADLINE_EXCEEDED; the server got the deadline and sees the call end', async () => {
    const tag = 'hold:deadline';
    const seen = holdCall(tag);
    const call = unary(Buffer.from(tag), { deadline: Date.now() + 1500 });
    const serverSide = await seen;
    assert.ok(
      Number.isFinite(new Date(serverSide.deadline).getTime()),
      'grpc-timeout did not reach the server',
    );
    await assert.rejects(call, (err: grpc.ServiceError) => err.code === grpc.status.DEADLINE_EXCEEDED);
    await within(serverSide.cancelled, scaled(EVENT_MS), 'the server to see the call cancelled');
  });

  test('a client cancel resets the call at the server', async () => {
    const tag = 'hold:cancel';
    const seen = holdCall(tag);
    let call!: grpc.ClientUnaryCall;
    const result = new Promise<grpc.ServiceError | null>((resolve) => {
      // No deadline: only the reset carried through the tunnel can tell the server.
      call = client.unary(Buffer.from(tag), new grpc.Metadata(), {}, (err) => resolve(err));
    });
    const serverSide = await seen;
    assert.equal(serverSide.deadline, Infinity, 'the server got a deadline though the client set none');
    call.cancel();
    const err = await within(result, scaled(EVENT_MS), 'the cancelled call to end');
    assert.equal(err?.code, grpc.status.CANCELLED);
    await within(serverSide.cancelled, scaled(EVENT_MS), 'the server to see the call cancelled');
  });

  test('1,000 concurrent bidirectional streaming calls, each answered in order, none mixed up', async () => {
    // The listener allows 100 streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS), so the
    // calls are spread over 10 channels, each its own connection, 100 calls on each.
    const CHANNELS = 10;
    const PER_CHANNEL = 100;
    const CALLS = CHANNELS * PER_CHANNEL;
    const ROUNDS = 3;
    const channels = Array.from({ length: CHANNELS }, () =>
      newClient({ 'grpc.use_local_subchannel_pool': 1 }),
    );
    try {
      // All are open at once: every call writes its first message before any is ended, and none is
      // ended before every call has all its replies, so 1,000 streams are in flight together.
      const calls = Array.from({ length: CALLS }, (_, i) => channels[i % CHANNELS]!.bidi());
      const replies = calls.map(() => [] as string[]);
      let answered = 0;
      let allAnswered!: () => void;
      const everyAnswer = new Promise<void>((resolve) => (allAnswered = resolve));
      const ended = calls.map(
        (call, i) =>
          new Promise<void>((resolve, reject) => {
            call.on('data', (b: Buffer) => {
              const mine = replies[i]!;
              mine.push(b.toString());
              if (mine.length < ROUNDS) call.write(Buffer.from(`call ${i} round ${mine.length}`));
              else if (mine.length === ROUNDS && ++answered === CALLS) allAnswered();
            });
            call.on('error', reject);
            call.on('end', () => resolve());
          }),
      );
      const failed = Promise.all(ended).then(() => {
        throw new Error('every call ended before all were answered');
      });
      calls.forEach((call, i) => call.write(Buffer.from(`call ${i} round 0`)));
      await within(
        Promise.race([everyAnswer, failed]),
        scaled(90_000),
        `every call's replies (${answered} of ${CALLS} calls done)`,
      );
      for (const call of calls) call.end();
      await within(Promise.all(ended), scaled(60_000), 'every call to end');
      for (let i = 0; i < CALLS; i++) {
        assert.deepEqual(
          replies[i],
          Array.from({ length: ROUNDS }, (_, r) => `echo call ${i} round ${r}`),
          `call ${i}`,
        );
      }
    } finally {
      for (const c of channels) c.close();
    }
  });

  test('a 4 MiB message both ways', async () => {
    const big = Buffer.alloc(4 * MiB);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32BE(i, i);
    const back = await unary(big);
    assert.equal(back.length, big.length);
    assert.ok(back.equals(big));
  });
});

describe('a plain HTTP/1.1 client to an h2c:// target', () => {
  test('the agent converts: body, trailers, and one HTTP/2 session for two requests', async () => {
    const body = Buffer.alloc(300 * 1024, 'x');
    const sessionsBefore = h2Sessions;
    const first = await ask({
      port: stack.port,
      host: 'plain-h2.test',
      method: 'POST',
      path: '/upload?x=1',
      headers: { 'transfer-encoding': 'chunked', connection: 'keep-alive' },
      body,
    });
    assert.equal(first.status, 200, first.body.toString());
    assert.equal(first.body.toString(), `POST /upload?x=1 plain-h2.test ${body.length}`);
    assert.equal(first.trailers['x-sha256'], createHash('sha256').update(body).digest('hex'));
    const second = await ask({ port: stack.port, host: 'plain-h2.test', path: '/two' });
    assert.equal(second.status, 200);
    assert.equal(second.body.toString(), 'GET /two plain-h2.test 0');
    assert.ok(h2Sessions - sessionsBefore <= 1, `${h2Sessions - sessionsBefore} sessions for two requests`);
  });
});
