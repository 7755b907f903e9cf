// What a failed dial or tunnel handshake most likely means, said in terms of what to change. A scheme
// that does not match the listener fails in ways that name neither side: a TLS listener closes a plain
// connection without a byte, so the agent sees only "transport ended by peer"; a plain listener
// answers a ClientHello with tunnel frames, which OpenSSL reports as "wrong version number" or
// "unexpected message". A certificate the agent does not trust is fixed with --ca, one that does not
// carry the dialled name with --servername.
import type { Duplex } from 'node:stream';
import { SessionError, SluiceError } from '../errors.js';
import { formatTransportUrl, parseTransportUrl, type TransportScheme } from './url.js';

// Verify failures where the chain does not lead to a trusted CA (OpenSSL X509_V_ERR_* names).
const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_UNTRUSTED',
]);

// What a TLS client sees when the server speaks something else.
const NOT_TLS = new Set([
  'ERR_SSL_WRONG_VERSION_NUMBER',
  'ERR_SSL_UNEXPECTED_MESSAGE',
  'ERR_SSL_PACKET_LENGTH_TOO_LONG',
  'ERR_SSL_UNEXPECTED_EOF_WHILE_READING',
  'ERR_SSL_RECORD_LAYER_FAILURE',
  'ERR_SSL_HTTP_REQUEST',
]);

// The first byte of a TLS record: handshake (a ServerHello) or alert (RFC 8446 §5.1).
const TLS_HANDSHAKE = 0x16;
const TLS_ALERT = 0x15;

const PLAIN: Partial<Record<TransportScheme, TransportScheme>> = { tls: 'tcp', wss: 'ws' };
const SECURE: Partial<Record<TransportScheme, TransportScheme>> = { tcp: 'tls', ws: 'wss' };

/** `url` with another scheme, e.g. tls://h:7000 for tcp://h:7000. */
function withScheme(url: string, scheme: TransportScheme): string {
  return formatTransportUrl({ ...parseTransportUrl(url), scheme });
}

/** The reason of a dial error as a user should read it: OpenSSL's, without its source file and line. */
export function dialReason(err: NodeJS.ErrnoException & { reason?: unknown }): string {
  if (err.code?.startsWith('ERR_SSL_') === true && typeof err.reason === 'string') return err.reason;
  // Some paths (the ws client's) carry OpenSSL's raw text: "write EPROTO 80..:error:0A0000F4:SSL
  // routines:ssl3_read_bytes:unexpected message:../deps/openssl/...".
  const openssl = OPENSSL_TEXT.exec(err.message);
  return openssl === null ? err.message : openssl[1]!;
}

const OPENSSL_TEXT = /SSL routines:[^:]*:([^:]+):/;

/** A hint for a failed dial of `url`, or undefined when the error speaks for itself. */
export function dialHint(
  url: string,
  err: NodeJS.ErrnoException,
  options: { ca?: unknown; servername?: unknown },
): string | undefined {
  const { scheme } = parseTransportUrl(url);
  const code = err.code ?? '';
  if (UNTRUSTED.has(code)) {
    return options.ca === undefined
      ? "the controller's certificate is not signed by a CA this machine trusts: pass the CA that signed it with --ca FILE (the ca option)"
      : "the controller's certificate is not signed by the CA given with --ca (the ca option): pass the CA that signed it";
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return 'dial a name the certificate carries, or set --servername NAME (the servername option) to one';
  }
  const plain = PLAIN[scheme];
  const beforeSecure = code === 'ECONNRESET' && /before secure TLS connection/.test(err.message);
  const openssl = code === 'EPROTO' && OPENSSL_TEXT.test(err.message);
  if (plain !== undefined && (NOT_TLS.has(code) || beforeSecure || openssl)) {
    return `the controller may not serve TLS there: if its tunnelListen is ${plain}://, try ${withScheme(url, plain)}`;
  }
  // A TLS listener closes an HTTP upgrade request that came in plain.
  const secure = SECURE[scheme];
  if (
    scheme === 'ws' &&
    secure !== undefined &&
    (code === 'ECONNRESET' || /socket hang up/.test(err.message))
  ) {
    return `the controller may expect TLS: try ${withScheme(url, secure)}`;
  }
  return undefined;
}

/** Watches the first bytes of a tunnel handshake over a plain transport. */
export interface HandshakeWatch {
  /** The handshake succeeded: stop watching. */
  done(): void;
  /** The error the handshake failed with, with a hint added when the bytes seen suggest one. */
  explain(err: unknown): unknown;
}

/**
 * Watches `transport`, just dialled to `url`, until its handshake ends. Must be called before the session
 * takes the transport, in the same turn: the listener only observes, it consumes nothing.
 */
export function watchHandshake(transport: Duplex, url: string): HandshakeWatch {
  const { scheme } = parseTransportUrl(url);
  const secure = SECURE[scheme];
  if (scheme !== 'tcp' || secure === undefined) return { done() {}, explain: (err) => err };
  let first: number | undefined;
  const onData = (chunk: Buffer): void => {
    first = chunk[0];
    transport.off('data', onData);
  };
  transport.on('data', onData);
  return {
    done: () => transport.off('data', onData),
    explain(err) {
      transport.off('data', onData);
      if (!(err instanceof SluiceError)) return err;
      const tls = first === TLS_HANDSHAKE || first === TLS_ALERT;
      const silent = first === undefined && err.code === 'SLUICE_ERR_TRANSPORT_CLOSED';
      if (!tls && !silent) return err;
      const seen = tls
        ? 'the controller answered with TLS'
        : 'the controller closed the connection without answering the handshake';
      const hint = `${seen}; it may expect TLS: try ${withScheme(url, secure)}`;
      return new SessionError(err.code, `${err.message}: ${hint}`, err.wireCode, { cause: err });
    },
  };
}
