// socket.io through real controller and agent processes (the upgrade issue): the websocket transport,
// the long-polling transport and the upgrade from one to the other, with rooms and broadcasts. The
// socket.io server runs in this process behind the tunnel.
//
// The websocket transport sets Host through `extraHeaders` (engine.io-client hands them to `ws`). The
// polling transport cannot: Node's XMLHttpRequest (xmlhttprequest-ssl) drops Host as a forbidden header
// and sends the URL's. So polling clients dial http://localhost:PORT, which a `localhost` route serves.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { Server } from 'socket.io';
import { io as connect, type ManagerOptions, type Socket, type SocketOptions } from 'socket.io-client';
import { Stack } from '../helpers/sluice-procs.js';
import { EVENT_MS, READY_MS, scaled, within } from '../helpers/wait.js';

let http: HttpServer;
let server: Server;
let stack: Stack;
const clients: Socket[] = [];

before(async () => {
  http = createServer();
  server = new Server(http, { maxHttpBufferSize: 4 * 1024 * 1024 });
  server.on('connection', (socket) => {
    socket.on('echo', (value: unknown, ack: (v: unknown) => void) => ack(value));
    socket.on('transport', (ack: (name: string) => void) => ack(socket.conn.transport.name));
    socket.on('join', (room: string, ack: () => void) => {
      void socket.join(room);
      ack();
    });
    socket.on('shout', (room: string, text: string, ack: () => void) => {
      server.to(room).emit('news', text);
      // Sent after the room's message on every connection, so whoever gets this without the news
      // was not sent the news.
      server.emit('marker', text);
      ack();
    });
  });
  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  const target = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  stack = await Stack.start({
    routes: [
      { host: 'app.test', target },
      { host: 'localhost', target },
    ],
  });
});

after(async () => {
  for (const c of clients) c.disconnect();
  await new Promise<void>((resolve) => server?.close(() => resolve()) ?? resolve());
  await stack?.stop();
});

type Options = Partial<ManagerOptions & SocketOptions>;

/** A client that went through the controller: websocket via the Host header, polling via localhost. */
async function open(transports: ('websocket' | 'polling')[]): Promise<Socket> {
  const options: Options = { transports, forceNew: true, reconnection: false, timeout: scaled(EVENT_MS) };
  const client =
    transports.length === 1 && transports[0] === 'websocket'
      ? connect(`http://127.0.0.1:${stack.port}`, { ...options, extraHeaders: { host: 'app.test' } })
      : connect(`http://localhost:${stack.port}`, options);
  clients.push(client);
  await within(
    new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('connect_error', reject);
    }),
    READY_MS,
    'the socket.io connection',
  );
  return client;
}

function ask<T>(client: Socket, event: string, ...args: unknown[]): Promise<T> {
  return within(client.timeout(scaled(EVENT_MS)).emitWithAck(event, ...args) as Promise<T>, READY_MS, event);
}

describe('socket.io', () => {
  test('the websocket transport: messages and binary payloads with acks', async () => {
    const client = await open(['websocket']);
    assert.equal(client.io.engine.transport.name, 'websocket');
    assert.equal(await ask<string>(client, 'transport'), 'websocket');
    assert.equal(await ask<string>(client, 'echo', 'hello'), 'hello');
    const bytes = Buffer.from(Array.from({ length: 70_000 }, (_, i) => i % 251));
    const back = await ask<Buffer>(client, 'echo', bytes);
    assert.ok(Buffer.from(back).equals(bytes));
    assert.deepEqual(await ask<unknown>(client, 'echo', { nested: [1, 'two', null] }), {
      nested: [1, 'two', null],
    });
    client.disconnect();
  });

  test('the long-polling transport: messages both ways, large ones too', async () => {
    const client = await open(['polling']);
    assert.equal(client.io.engine.transport.name, 'polling');
    assert.equal(await ask<string>(client, 'transport'), 'polling');
    assert.equal(await ask<string>(client, 'echo', 'over polling'), 'over polling');
    const big = 'x'.repeat(500_000);
    assert.equal(await ask<string>(client, 'echo', big), big);
    client.disconnect();
  });

  test('polling first, then the upgrade to websocket through the tunnel', async () => {
    const client = await open(['polling', 'websocket']);
    const engine = client.io.engine;
    if (engine.transport.name !== 'websocket') {
      await within(
        new Promise<void>((resolve) => engine.once('upgrade', () => resolve())),
        EVENT_MS,
        'the transport upgrade',
      );
    }
    assert.equal(engine.transport.name, 'websocket');
    assert.equal(await ask<string>(client, 'transport'), 'websocket');
    assert.equal(await ask<string>(client, 'echo', 'after the upgrade'), 'after the upgrade');
    client.disconnect();
  });

  test("rooms: a broadcast to 'r' reaches exactly the two members, on either transport", async () => {
    const a = await open(['websocket']);
    const b = await open(['polling']);
    const c = await open(['websocket']);
    await ask(a, 'join', 'r');
    await ask(b, 'join', 'r');
    assert.equal((await server.in('r').fetchSockets()).length, 2);

    const heard = (client: Socket) =>
      within(
        new Promise<string[]>((resolve) => {
          const news: string[] = [];
          client.on('news', (text: string) => news.push(text));
          client.once('marker', () => resolve(news));
        }),
        EVENT_MS,
        'the marker',
      );
    const got = [heard(a), heard(b), heard(c)];
    await ask(c, 'shout', 'r', 'for the room');
    const [na, nb, nc] = await Promise.all(got);
    assert.deepEqual(na, ['for the room']);
    assert.deepEqual(nb, ['for the room']);
    assert.deepEqual(nc, [], 'the client outside the room got the broadcast');
    for (const s of [a, b, c]) s.disconnect();
  });
});
