// Plain TCP: the socket is the transport.
import { connect, createServer, type Server, type Socket } from 'node:net';
import { type PendingDial, pendingSocket } from './common.js';
import type { TransportTarget } from './url.js';

export function dialTcp(target: TransportTarget): PendingDial {
  return pendingSocket(connect({ host: target.host, port: target.port }), 'connect');
}

export function createTcpServer(accept: (transport: Socket, socket: Socket) => void): Server {
  return createServer((socket) => accept(socket, socket));
}
