// `Upgrade: h2c` served as plain HTTP/1.1 (issue 11, item 11), on a real node:http server and raw
// sockets: the request reaches the 'request' listener without its upgrade fields, with the rest of
// its Connection tokens, and whatever followed it on the connection is still read.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { isH2cUpgrade, serveWithoutUpgrade } from '../../src/controller/h2c.js';
import { listenOnLoopback } from '../helpers/listen.js';
import { within } from '../helpers/wait.js';

const SETTINGS = 'HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n';

let server: Server;
let port: number;
const upgrades: IncomingMessage[] = [];

before(async () => {
  server = createServer((req, res) => {
    let body = '';
    req.setEncoding('latin1');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => res.end(JSON.stringify({ url: req.url, rawHeaders: req.rawHeaders, body })));
  });
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    if (isH2cUpgrade(req)) return serveWithoutUpgrade(server, req, socket, head);
    upgrades.push(req);
    socket.end('HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: other\r\n\r\n');
  });
  port = await listenOnLoopback(server);
});

after(() => {
  server.closeAllConnections();
  server.close();
});

/** Writes `bytes` and reads until the server closes the connection or `responses` bodies arrived. */
async function send(bytes: string, responses: number): Promise<{ text: string; closed: boolean }> {
  const socket = connect(port, '127.0.0.1');
  let text = '';
  let closed = false;
  socket.setEncoding('latin1');
  socket.on('error', () => {});
  const done = new Promise<void>((resolve) => {
    socket.on('data', (c: string) => {
      text += c;
      if ((text.match(/HTTP\/1\.1 /g) ?? []).length >= responses && text.endsWith('}')) resolve();
    });
    socket.on('close', () => {
      closed = true;
      resolve();
    });
  });
  socket.write(bytes, 'latin1');
  await within(done, 30_000, 'the responses');
  if (!closed && /Connection: close/i.test(text)) await within(once(socket, 'close'), 30_000, 'the close');
  closed = socket.destroyed || closed;
  socket.destroy();
  return { text, closed };
}

function bodies(text: string): { url: string; rawHeaders: string[]; body: string }[] {
  return [...text.matchAll(/\r\n\r\n(\{.*?\})(?=HTTP\/1\.1 |$)/gs)].map(
    (m) => JSON.parse(m[1]!) as { url: string; rawHeaders: string[]; body: string },
  );
}

describe('h2c upgrades', () => {
  test('isH2cUpgrade: h2c in any case, alone or in a list; nothing else', () => {
    const req = (upgrade: string | undefined) => ({ headers: { upgrade } }) as unknown as IncomingMessage;
    for (const value of ['h2c', 'H2C', ' h2c ', 'websocket, h2c', 'h2c/1'])
      assert.equal(isH2cUpgrade(req(value)), true);
    for (const value of [undefined, '', 'websocket', 'h2', 'h2cx'])
      assert.equal(isH2cUpgrade(req(value)), false);
  });

  test('the request arrives plain: no Upgrade, no HTTP2-Settings, other Connection tokens kept', async () => {
    const { text, closed } = await send(
      'GET /one HTTP/1.1\r\nHost: a\r\nConnection: close, Upgrade, HTTP2-Settings, X-Hop\r\n' +
        `Upgrade: h2c\r\n${SETTINGS}X-Hop: 1\r\n\r\n`,
      1,
    );
    assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
    const [seen] = bodies(text);
    assert.equal(seen?.url, '/one');
    assert.deepEqual(seen?.rawHeaders, ['Host', 'a', 'Connection', 'close, X-Hop', 'X-Hop', '1']);
    assert.equal(closed, true, 'Connection: close still meant close');
  });

  test('a body, and requests pipelined behind in the same write, are read by the fresh parser', async () => {
    const { text } = await send(
      `POST /post HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n${SETTINGS}\r\nhello` +
        `GET /again HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n` +
        'GET /last HTTP/1.1\r\nHost: a\r\n\r\n',
      3,
    );
    assert.deepEqual(
      bodies(text).map((b) => [b.url, b.body]),
      [
        ['/post', 'hello'],
        ['/again', ''],
        ['/last', ''],
      ],
    );
  });

  test('any other Upgrade still reaches the upgrade listener', async () => {
    const { text } = await send(
      'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: other\r\n\r\n',
      1,
    );
    assert.match(text, /^HTTP\/1\.1 101 /);
    assert.equal(upgrades.at(-1)?.url, '/ws');
  });
});
