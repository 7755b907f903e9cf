// Joins two byte streams for a raw TCP relay (a TCP route: docs/tcp.md), on the controller between the
// public socket and the tunnel stream and on the agent between the stream and the target's socket.
// Each direction has its own backpressure (a full writer pauses its reader until `drain`) and its own
// FIN: one side's end ends the other's writable side only, so a client that half-closes still gets
// the reply. Resets and errors are the caller's: it knows which side to blame.
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/**
 * What one direction may queue on its writer before it pauses its reader. A socket's own high-water
 * mark (16 KiB) is less than one tunnel read: pausing at it stopped the stream after every piece,
 * whose next pieces were then copied into the stream's queue. `write()` returned false at the 16 KiB
 * already, so the writer emits `drain` once it has flushed, and the paused reader resumes then.
 */
const SPLICE_HIGH_WATER = 256 * 1024;

/** Pipes `a` and `b` into each other until both directions have ended. */
export function splice(a: Duplex, b: Duplex): void {
  oneWay(a, b);
  oneWay(b, a);
}

/** Pipes `from` into `to` with backpressure, ending `to`'s writable side at `from`'s end. */
export function oneWay(from: Duplex, to: Duplex): void {
  const batch = to instanceof Socket;
  from.on('data', (chunk: Buffer) => {
    if (batch && (chunk.length >= BATCH_MIN || to.writableCorked !== 0)) corkForTurn(to);
    if (!to.write(chunk) && to.writableLength >= SPLICE_HIGH_WATER) from.pause();
  });
  to.on('drain', () => from.resume());
  from.on('end', () => {
    if (!to.destroyed && !to.writableEnded) to.end();
  });
  from.resume();
}

// A tunnel read of 64 KiB holds the end of one DATA frame and the start of the next, and one poll
// phase reads many: written as they come, each piece was a write(2) of its own. Corked until the
// turn's immediates run, the pieces a socket got in one turn leave in one writev, as the session's
// own frames do (tunnel/session.ts). The delay is the rest of the poll phase, not a timer.
// A small chunk (a request, an echo) goes out at once, unless one is corked already (the bytes keep
// their order either way): one socket gets one such chunk per turn, and the cork would only add work.
const BATCH_MIN = 8 * 1024;
const corked: Socket[] = [];
let uncorkScheduled = false;

function corkForTurn(socket: Socket): void {
  if (socket.writableCorked !== 0) return;
  socket.cork();
  corked.push(socket);
  if (!uncorkScheduled) {
    uncorkScheduled = true;
    setImmediate(uncorkAll);
  }
}

function uncorkAll(): void {
  uncorkScheduled = false;
  const sockets = corked.splice(0);
  for (const socket of sockets) socket.uncork();
}
