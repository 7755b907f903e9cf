// TLS over TCP. The dialer always verifies the controller's certificate: there is deliberately no
// option to turn verification off, only a way to trust a private CA.

import { X509Certificate } from 'node:crypto';
import { isIP, type Server, type Socket } from 'node:net';
import { connect, createSecureContext, createServer, type TLSSocket } from 'node:tls';
import { SluiceError } from '../errors.js';
import { type PendingDial, pendingSocket } from './common.js';
import type { TransportTarget } from './url.js';

export interface ClientTlsOptions {
  ca: string | Buffer | undefined;
  servername: string | undefined;
}

export interface ServerTlsOptions {
  cert: string | Buffer;
  key: string | Buffer;
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

export function clientTlsOptions(
  target: TransportTarget,
  options: { ca?: string | Buffer | undefined; servername?: string | undefined },
): ClientTlsOptions {
  if (options.ca !== undefined) checkCa(options.ca);
  // SNI carries host names only (RFC 6066 §3); for an IP address the certificate is checked against
  // the IP itself, and Node warns if an IP is set as the servername.
  const servername = options.servername ?? (isIP(target.host) === 0 ? target.host : undefined);
  return { ca: options.ca, servername };
}

export function serverTlsOptions(url: string, options: { cert?: string | Buffer; key?: string | Buffer }) {
  const { cert, key } = options;
  if (cert === undefined || key === undefined) {
    throw tlsConfigError(`listening on ${url} needs both cert and key (PEM contents)`);
  }
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw tlsConfigError(`the cert/key for ${url} are not usable: ${(err as Error).message}`, err);
  }
  return { cert, key } satisfies ServerTlsOptions;
}

export function dialTls(target: TransportTarget, tls: ClientTlsOptions): PendingDial {
  const socket = connect({
    host: target.host,
    port: target.port,
    ca: tls.ca,
    servername: tls.servername,
    rejectUnauthorized: true,
  });
  return pendingSocket(socket, 'secureConnect');
}

export function createTlsServer(
  tls: ServerTlsOptions,
  accept: (transport: TLSSocket, socket: Socket) => void,
): Server {
  const server = createServer(tls, (socket) => accept(socket, socket));
  // A client that rejects our certificate or speaks no TLS is its own problem, not the listener's.
  server.on('tlsClientError', (_err, socket) => socket.destroy());
  return server;
}

// Node silently ignores a `ca` it cannot parse and then fails every handshake with a verify error,
// which points the operator at the wrong end; check it here instead.
export function checkCa(ca: string | Buffer): void {
  const blocks = String(ca).match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0)
    throw tlsConfigError('ca must hold PEM certificates (-----BEGIN CERTIFICATE-----)');
  for (const block of blocks) {
    try {
      new X509Certificate(block);
    } catch (err) {
      throw tlsConfigError(`ca holds a certificate that does not parse: ${(err as Error).message}`, err);
    }
  }
}

function tlsConfigError(message: string, cause?: unknown): SluiceError {
  return new SluiceError('SLUICE_ERR_TLS_CONFIG', message, undefined, { cause });
}
