// The agent side of the relay pair. It connects each forwarded connection to the sink: `pipe`
// listens for the controller relay's TCP connections, `sluice` dials one tunnel to the controller
// relay and serves the streams the controller opens on that session.
import net from 'node:net';
import { parseArgs } from 'node:util';
import { Session } from '../../src/tunnel/session.js';
import type { Stream } from '../../src/tunnel/stream.js';
import { send, sendReady } from '../common/ipc.js';
import { Counters, HOST, serveRelayIpc, splice } from './common.js';

const { values } = parseArgs({
  options: {
    impl: { type: 'string' },
    'sink-port': { type: 'string' },
    'tunnel-port': { type: 'string' },
  },
});
const impl = values.impl;
const sinkPort = Number(values['sink-port']);
const counters = new Counters();
let session: Session | null = null;
let sessionError = '';

function connectSink(): net.Socket {
  return net.connect({ host: HOST, port: sinkPort, noDelay: true, allowHalfOpen: true });
}

function onPipeConnection(socket: net.Socket): void {
  splice(socket, connectSink(), counters);
}

function onStream(stream: Stream): void {
  splice(stream, connectSink(), counters);
}

function dial(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: HOST, port, noDelay: true });
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
  });
}

async function startSluice(tunnelPort: number): Promise<void> {
  const socket = await dial(tunnelPort);
  const s = await Session.connect(socket, {
    hello: { token: 'bench', agent: 'bench-agent', replica: 'r1' },
    options: {},
    onStream,
  });
  session = s;
  s.on('close', (err?: Error) => {
    sessionError = err?.message ?? 'closed';
    session = null;
    send({ type: 'event', name: 'tunnel-closed', error: sessionError });
  });
}

function listenPipe(): Promise<number> {
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, onPipeConnection);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: HOST, port: 0, backlog: 4096 }, () => {
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}

async function main(): Promise<void> {
  let port = 0;
  if (impl === 'pipe') port = await listenPipe();
  else if (impl === 'sluice') await startSluice(Number(values['tunnel-port']));
  else throw new Error(`--impl must be pipe or sluice, not ${impl}`);
  serveRelayIpc(counters, () => ({ session, error: sessionError }));
  sendReady({ port });
}

main().catch((err: Error) => {
  console.error(`relay-agent: ${err.stack}`);
  process.exit(1);
});
