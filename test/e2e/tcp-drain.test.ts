// A controller's drain with a TCP route's connection open and no HTTP request in flight: the
// connection goes on for the grace period (bytes still echo through it), then ends with a FIN, and the
// controller exits 0. Before the drain counted TCP connections, such a controller cut them at once.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { listenOnLoopback } from '../helpers/listen.js';
import { Stack } from '../helpers/sluice-procs.js';
import { EVENT_MS, READY_MS, within } from '../helpers/wait.js';

const GRACE_MS = 2000;

let echo: Server;
let stack: Stack | undefined;

before(async () => {
  echo = createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('error', () => {});
    socket.pipe(socket);
  });
  const port = await listenOnLoopback(echo);
  stack = await Stack.start({
    routes: [],
    extraYaml: [
      'tunnel:',
      `  gracePeriod: ${GRACE_MS}`,
      'tcpRoutes:',
      '  - listen: 127.0.0.1:0',
      '    cluster: c1',
      `    target: tcp://127.0.0.1:${port}`,
    ].join('\n'),
    allow: [`127.0.0.1:${port}`],
  });
});

after(async () => {
  await stack?.stop();
  echo?.close();
});

/** Writes `bytes` and resolves with as many bytes read back. */
async function roundTrip(socket: Socket, bytes: Buffer): Promise<Buffer> {
  const got: Buffer[] = [];
  let n = 0;
  const done = new Promise<void>((resolve) => {
    const onData = (chunk: Buffer): void => {
      got.push(chunk);
      n += chunk.length;
      if (n >= bytes.length) {
        socket.off('data', onData);
        resolve();
      }
    };
    socket.on('data', onData);
  });
  socket.write(bytes);
  await within(done, EVENT_MS, 'the echo');
  return Buffer.concat(got);
}

describe('a controller drain with a TCP route connection open', () => {
  test('the connection goes on for the grace period, then gets a FIN; exit 0', async () => {
    const s = stack!;
    const line = await s.controller.waitLine(
      'the TCP route listener',
      (l) => l.event === 'listening' && l.listener === 'tcp',
    );
    const client = connect({ host: '127.0.0.1', port: Number(new URL(String(line.url)).port) });
    await within(once(client, 'connect'), EVENT_MS, 'the connection');
    assert.equal((await roundTrip(client, Buffer.from('before'))).toString(), 'before');
    let failure: Error | undefined;
    client.on('error', (err: Error) => (failure = err));
    const ended = new Promise((resolve) => client.once('end', resolve));
    const started = Date.now();
    s.controller.child.kill('SIGTERM');
    await s.controller.waitLine('the drain to begin', (l) => l.event === 'stopping');
    const during = Buffer.alloc(256 * 1024, 7);
    assert.ok((await roundTrip(client, during)).equals(during), 'bytes still pass during the drain');
    await within(ended, EVENT_MS + GRACE_MS, 'the FIN once the grace period is over');
    const waited = Date.now() - started;
    assert.ok(waited >= GRACE_MS - 200, `ended after ${waited} ms, before the ${GRACE_MS} ms grace period`);
    assert.equal(failure, undefined, 'an orderly close, not a reset');
    client.end();
    assert.equal(await within(s.controller.exited, READY_MS, 'the controller to exit'), 0);
    const grace = s.controller.lines.find((l) => l.event === 'grace-ended');
    assert.ok(grace !== undefined && Number(grace.upgrades) >= 1, JSON.stringify(grace));
  });
});
