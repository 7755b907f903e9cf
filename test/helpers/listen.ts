// Starts a test server on 127.0.0.1 with a port the system picks, and says which; or finds a free port
// for a child process that must be told its port before it binds (a peer's advertised URL, a restart).
import { once } from 'node:events';
import { type AddressInfo, createServer, type Server } from 'node:net';

export async function listenOnLoopback(server: Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

/** A port of 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
