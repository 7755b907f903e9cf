// The `node-proxy` path: one reverse-proxy hop in plain Node, the `http-proxy` package with a
// keep-alive agent to the origin and WebSocket support on. Its own process, like every hop.
//   node node-proxy.js --origin-port N
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { parseArgs } from 'node:util';
import httpProxy from 'http-proxy';
import { sendReady, serveIpc } from '../common/ipc.js';
import { HOST } from './common.js';

const { values } = parseArgs({ options: { 'origin-port': { type: 'string' } } });
const originPort = Number(values['origin-port']);
if (!Number.isInteger(originPort) || originPort <= 0) throw new Error('--origin-port must be a port');

const stats = { errors: 0, firstError: '' };

// The origin sees the client's Host (changeOrigin off), which it ignores, as with the other paths.
const agent = new http.Agent({ keepAlive: true, maxFreeSockets: 1024 });
const proxy = httpProxy.createProxyServer({ target: `http://${HOST}:${originPort}`, agent, ws: true });

proxy.on('error', (err, _req, res) => {
  stats.errors += 1;
  stats.firstError ||= err.message;
  if (res instanceof http.ServerResponse) {
    if (!res.headersSent) res.writeHead(502, { 'Content-Type': 'text/plain' });
    res.end('bad gateway\n');
  } else {
    (res as Socket).destroy();
  }
});

const server = http.createServer({ requestTimeout: 0 }, (req, res) => proxy.web(req, res));
server.keepAliveTimeout = 120_000;
server.on('upgrade', (req, socket: Socket, head) => {
  socket.on('error', () => {});
  proxy.ws(req, socket, head);
});
server.on('clientError', (_err, socket) => socket.destroy());
server.listen({ host: HOST, port: 0, backlog: 4096 }, () => {
  serveIpc({ stats: () => ({ ...stats }) });
  sendReady({ port: (server.address() as AddressInfo).port });
});
