// The service behind the agent. The first byte of each connection picks its mode (common.ts Mode):
// discard and report the count, echo, discard slowly (token bucket), or hold idle.
import net from 'node:net';
import { sendReady, serveIpc } from '../common/ipc.js';
import { HOST, Mode, SLOW_READ_BPS } from './common.js';

const stats = { connections: 0, active: 0, discarded: 0, echoed: 0, slowRead: 0, held: 0, errors: 0 };

function reportCount(socket: net.Socket, count: number): void {
  socket.end(`${count}\n`);
}

function discard(socket: net.Socket, first: Buffer): void {
  let count = first.length;
  socket.on('data', (chunk: Buffer) => {
    count += chunk.length;
  });
  socket.on('end', () => {
    stats.discarded += count;
    reportCount(socket, count);
  });
}

function echo(socket: net.Socket, first: Buffer): void {
  const write = (chunk: Buffer) => {
    stats.echoed += chunk.length;
    if (!socket.write(chunk)) socket.pause();
  };
  socket.on('drain', () => socket.resume());
  socket.on('data', write);
  socket.on('end', () => socket.end());
  if (first.length > 0) write(first);
}

/** Reads at SLOW_READ_BPS: each chunk books its share of time, and the socket pauses until then. */
function slow(socket: net.Socket, first: Buffer): void {
  let count = 0;
  let freeAt = performance.now();
  let timer: NodeJS.Timeout | null = null;
  const resume = () => {
    timer = null;
    socket.resume();
  };
  const take = (chunk: Buffer) => {
    count += chunk.length;
    stats.slowRead += chunk.length;
    const now = performance.now();
    freeAt = Math.max(freeAt, now) + (chunk.length / SLOW_READ_BPS) * 1000;
    if (freeAt - now > 5 && timer === null) {
      socket.pause();
      timer = setTimeout(resume, freeAt - now);
    }
  };
  socket.on('data', take);
  socket.on('close', () => {
    if (timer !== null) clearTimeout(timer);
  });
  socket.on('end', () => reportCount(socket, count));
  if (first.length > 0) take(first);
}

function hold(socket: net.Socket): void {
  stats.held += 1;
  socket.write('h');
  socket.on('data', () => {});
  socket.on('end', () => socket.end());
}

function onFirstData(socket: net.Socket, chunk: Buffer): void {
  const rest = chunk.subarray(1);
  switch (chunk[0]) {
    case Mode.DISCARD:
      return discard(socket, rest);
    case Mode.ECHO:
      return echo(socket, rest);
    case Mode.SLOW:
      return slow(socket, rest);
    case Mode.HOLD:
      return hold(socket);
    default:
      stats.errors += 1;
      socket.destroy();
  }
}

function onConnection(socket: net.Socket): void {
  stats.connections += 1;
  stats.active += 1;
  socket.on('error', () => {
    stats.errors += 1;
  });
  socket.on('close', () => {
    stats.active -= 1;
  });
  socket.once('data', (chunk: Buffer) => onFirstData(socket, chunk));
}

const server = net.createServer({ allowHalfOpen: true, noDelay: true }, onConnection);
server.listen({ host: HOST, port: 0, backlog: 4096 }, () => {
  const { port } = server.address() as net.AddressInfo;
  serveIpc({ stats: () => ({ ...stats }) });
  sendReady({ port });
});
