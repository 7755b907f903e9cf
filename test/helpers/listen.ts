// Starts a test server on 127.0.0.1 with a port the system picks, and says which; or finds a free port
// for a child process that must be told its port before it binds (a peer's advertised URL, a restart).
import { once } from 'node:events';
import { type AddressInfo, createServer, type Server } from 'node:net';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';

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

/** A TCP server on 127.0.0.1 that echoes what each connection sends, half-closes included. */
export async function echoServer(): Promise<{ server: Server; port: number }> {
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('error', () => {});
    socket.pipe(socket);
  });
  return { server, port: await listenOnLoopback(server) };
}

/** The same over TLS, with `cert` and `key` (a passthrough target holding its own certificate). */
export async function tlsEchoServer(cert: string, key: string): Promise<{ server: TlsServer; port: number }> {
  const server = createTlsServer({ cert, key, allowHalfOpen: true }, (socket) => {
    socket.on('error', () => {});
    socket.pipe(socket);
  });
  server.on('tlsClientError', () => {});
  return { server, port: await listenOnLoopback(server as unknown as Server) };
}
