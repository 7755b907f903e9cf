// Starts a test server on 127.0.0.1 with a port the system picks, and says which.
import { once } from 'node:events';
import type { AddressInfo, Server } from 'node:net';

export async function listenOnLoopback(server: Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}
