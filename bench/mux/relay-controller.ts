// The controller side of the relay pair. It accepts the load generator's connections on its public
// port and forwards each one: `pipe` opens a TCP connection to the agent relay, `sluice` opens a
// stream on the session that the agent relay dialled into the tunnel port.
import net from 'node:net';
import { parseArgs } from 'node:util';
import { Session } from '../../src/tunnel/session.js';
import { send, sendReady } from '../common/ipc.js';
import { Counters, HOST, serveRelayIpc, splice } from './common.js';

const { values } = parseArgs({
  options: { impl: { type: 'string' }, 'agent-port': { type: 'string' } },
});
const impl = values.impl;
const counters = new Counters();
let session: Session | null = null;
let sessionError = '';

function forwardPipe(agentPort: number) {
  return (socket: net.Socket) => {
    const upstream = net.connect({ host: HOST, port: agentPort, noDelay: true, allowHalfOpen: true });
    splice(socket, upstream, counters);
  };
}

function forwardSluice(socket: net.Socket): void {
  if (session === null) {
    counters.error(new Error('no tunnel'));
    socket.destroy();
    return;
  }
  let stream: ReturnType<Session['open']>;
  try {
    stream = session.open({ kind: 'tcp', target: 'sink' });
  } catch (err) {
    counters.error(err as Error);
    socket.destroy();
    return;
  }
  splice(socket, stream, counters);
}

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: HOST, port: 0, backlog: 4096 }, () => {
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}

function onTunnel(socket: net.Socket): void {
  socket.setNoDelay(true);
  if (session !== null) {
    socket.destroy();
    return;
  }
  Session.accept(socket, { authenticate: () => ({ ok: true }), options: {} }).then(
    (s) => {
      session = s;
      s.on('close', (err?: Error) => {
        sessionError = err?.message ?? 'closed';
        session = null;
        send({ type: 'event', name: 'tunnel-closed', error: sessionError });
      });
      send({ type: 'event', name: 'tunnel' });
    },
    (err: Error) => {
      sessionError = err.message;
      send({ type: 'event', name: 'tunnel-failed', error: err.message });
    },
  );
}

async function main(): Promise<void> {
  const isPipe = impl === 'pipe';
  if (!isPipe && impl !== 'sluice') throw new Error(`--impl must be pipe or sluice, not ${impl}`);
  const onClient = isPipe ? forwardPipe(Number(values['agent-port'])) : forwardSluice;
  const publicServer = net.createServer({ allowHalfOpen: true, noDelay: true }, onClient);
  const publicPort = await listen(publicServer);
  let tunnelPort = 0;
  if (!isPipe) tunnelPort = await listen(net.createServer({ noDelay: true }, onTunnel));
  serveRelayIpc(counters, () => ({ session, error: sessionError }));
  sendReady({ publicPort, tunnelPort });
}

main().catch((err: Error) => {
  console.error(`relay-controller: ${err.stack}`);
  process.exit(1);
});
