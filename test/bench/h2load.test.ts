// The bench's h2load runs (bench/suite/h2load.ts) end when one client's TLS handshake completes late.
// h2load 1.52 by duration (`-D`) never exits then: its stop at the deadline misses the client whose
// session is not up yet, and that client sends requests for ever once it is. That is how `h2-c100`
// hung on sluice-tls, whose last handshakes of 100 take seconds under load. Here a real h2load talks
// to a real HTTP/2 server over TLS on 127.0.0.1, with one connection held before its handshake for
// longer than the old warm-up's duration (1 s in --quick); the run must end with every request done.
import assert from 'node:assert/strict';
import { createSecureServer, type Http2SecureServer } from 'node:http2';
import { createServer, type Server, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { H2_STREAMS, h2loadBinary, requestsFor, runH2load } from '../../bench/suite/h2load.js';
import { makeTestCerts } from '../helpers/certs.js';

const h2load = h2loadBinary();
/** Longer than the 1 s `-D` of the old --quick warm-up, which hung on a handshake this late. */
const HOLD_MS = 1500;
const REQUESTS = 400;

let h2: Http2SecureServer | undefined;
let front: Server | undefined;
let port = 0;
const sockets = new Set<Socket>();
/** Per connection, by the client's port: whether it was held, when its first request came, how many. */
interface Seen {
  held: boolean;
  acceptedAt: number;
  firstMs: number;
  count: number;
}
const served = new Map<number, Seen>();

before(async () => {
  if (h2load === null) return;
  const certs = await makeTestCerts();
  h2 = createSecureServer({ cert: certs.cert, key: certs.key });
  h2.on('stream', (stream) => {
    const seen = served.get(stream.session?.socket.remotePort ?? -1);
    if (seen !== undefined) {
      if (seen.count === 0) seen.firstMs = performance.now() - seen.acceptedAt;
      seen.count += 1;
    }
    stream.respond({ ':status': 200, 'content-length': '3' });
    stream.end('ok\n');
  });
  front = createServer((socket) => {
    sockets.add(socket);
    // The second connection is handed to the TLS server only after HOLD_MS: its handshake is late.
    const held = served.size === 1;
    served.set(socket.remotePort!, { held, acceptedAt: performance.now(), firstMs: -1, count: 0 });
    if (held) {
      socket.pause();
      setTimeout(() => h2!.emit('connection', socket), HOLD_MS);
    } else {
      h2!.emit('connection', socket);
    }
  });
  await new Promise<void>((resolve) => front!.listen(0, '127.0.0.1', resolve));
  port = (front.address() as { port: number }).port;
});

after(async () => {
  for (const socket of sockets) socket.destroy();
  await new Promise<void>((resolve) => (front === undefined ? resolve() : front.close(() => resolve())));
  await new Promise<void>((resolve) => (h2 === undefined ? resolve() : h2.close(() => resolve())));
});

test(
  'an h2load run ends, every request answered, when a client handshakes after the others have started',
  { skip: h2load === null ? 'needs h2load (nghttp2-client)' : false, timeout: 90_000 },
  async () => {
    const r = await runH2load(port, 2, REQUESTS, 60_000);
    assert.equal(r.requests, REQUESTS);
    assert.equal(r.succeeded, REQUESTS);
    assert.equal(r.bad, 0);
    // Both connections carried requests, and the held one's began only after its hold.
    assert.equal(served.size, 2, 'two connections');
    const late = [...served.values()].find((s) => s.held);
    const early = [...served.values()].find((s) => !s.held);
    assert.ok(late !== undefined && early !== undefined);
    assert.ok(early.count > 0 && late.count > 0, `requests per connection: ${early.count}, ${late.count}`);
    assert.equal(early.count + late.count, REQUESTS);
    assert.ok(late.firstMs >= HOLD_MS, `the held connection's first request came at ${late.firstMs} ms`);
  },
);

test('a measured run is sized to the last rate, with a few rounds of every stream at the least', () => {
  assert.equal(requestsFor(3000, 8, 100), 24_000);
  assert.equal(requestsFor(3000, 1, 100), 100 * H2_STREAMS * 5);
  assert.equal(requestsFor(0, 0, 10), 10 * H2_STREAMS * 5);
});
