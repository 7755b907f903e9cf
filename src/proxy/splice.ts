// Joins two byte streams for a raw TCP relay (a TCP route: docs/tcp.md), on the controller between the
// public socket and the tunnel stream and on the agent between the stream and the target's socket.
// Each direction has its own backpressure (a full writer pauses its reader until `drain`) and its own
// FIN: one side's end ends the other's writable side only, so a client that half-closes still gets
// the reply. Resets and errors are the caller's: it knows which side to blame.
import type { Duplex } from 'node:stream';

/** Pipes `a` and `b` into each other until both directions have ended. */
export function splice(a: Duplex, b: Duplex): void {
  oneWay(a, b);
  oneWay(b, a);
}

/** Pipes `from` into `to` with backpressure, ending `to`'s writable side at `from`'s end. */
export function oneWay(from: Duplex, to: Duplex): void {
  from.on('data', (chunk: Buffer) => {
    if (!to.write(chunk)) from.pause();
  });
  to.on('drain', () => from.resume());
  from.on('end', () => {
    if (!to.destroyed && !to.writableEnded) to.end();
  });
  from.resume();
}
