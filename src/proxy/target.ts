// Dialing a target from the agent: every address a name resolves to is checked against the protected
// ranges (src/agent/policy.ts), connects have a deadline, and failures map to the RST codes of
// docs/http-over-streams.md.
import { lookup as dnsLookup, type LookupAddress, type LookupAllOptions } from 'node:dns';
import type { LookupFunction, Socket } from 'node:net';
import { ErrorCode } from '../protocol/constants.js';
import type { RequestHead } from './meta.js';

const CONNECT_TIMEOUT = 'SLUICE_TARGET_CONNECT_TIMEOUT';
const FORBIDDEN_ADDRESS = 'SLUICE_TARGET_FORBIDDEN_ADDRESS';

/** Destroys `socket` with a CONNECT_TIMEOUT error unless it connects within `ms`. */
export function armConnectTimeout(socket: Socket, ms: number): void {
  if (!socket.connecting) return;
  const timer = setTimeout(() => socket.destroy(connectTimeoutError(ms)), ms);
  socket.once('connect', () => clearTimeout(timer));
  socket.once('close', () => clearTimeout(timer));
}

/** The error a connect that missed its deadline fails with; classify maps it to TARGET_TIMEOUT. */
export function connectTimeoutError(ms: number): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(`connect timed out after ${ms} ms`);
  err.code = CONNECT_TIMEOUT;
  return err;
}

const UNREACHABLE = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_FAIL',
]);

// OpenSSL's X509 verify results as Node names them (X509_V_ERR_* without the prefix), and Node's own
// name check: the target's certificate did not pass.
const CERTIFICATE_FAILURES =
  /^(?:ERR_TLS_CERT_ALTNAME_INVALID|.*CERT.*|UNABLE_TO_.*|INVALID_.*|PATH_LENGTH_EXCEEDED)$/;

/**
 * Whether `err` is TLS failing to an https:// target: its certificate, or the handshake (an alert, a
 * target that speaks no TLS on that port). Not for the controller's own TLS.
 */
export function isTargetTlsError(err: NodeJS.ErrnoException): boolean {
  const code = err.code ?? '';
  return (
    CERTIFICATE_FAILURES.test(code) ||
    code.startsWith('ERR_SSL_') ||
    code === 'EPROTO' ||
    code === 'ERR_TLS_HANDSHAKE_TIMEOUT'
  );
}

/** The RST code and the reason for a request that failed before the target answered. */
export function classify(err: NodeJS.ErrnoException, target: string): [number, string] {
  if (err.code === FORBIDDEN_ADDRESS) return [ErrorCode.TARGET_DENIED, err.message];
  // The message names what failed (`unable to verify the first certificate`, the names the certificate
  // carries); the code is what docs and searches know it by.
  if (isTargetTlsError(err))
    return [ErrorCode.TARGET_TLS, `${target}: ${err.message} (${err.code})`.slice(0, 500)];
  if (err.code === CONNECT_TIMEOUT) return [ErrorCode.TARGET_TIMEOUT, `${target}: ${err.message}`];
  if (err.code !== undefined && UNREACHABLE.has(err.code))
    return [ErrorCode.TARGET_UNREACHABLE, `${target}: ${err.code}`];
  return [ErrorCode.TARGET_UNREACHABLE, `${target}: closed before answering (${err.code ?? err.message})`];
}

/** The shape of dns.lookup that guardedLookup calls; tests pass a resolver of their own. */
export type Resolver = (
  hostname: string,
  options: LookupAllOptions,
  callback: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
) => void;

/**
 * A DNS lookup that checks every address a target name resolves to and keeps only allowed ones. Node 20
 * asks for all addresses (happy eyeballs) or one, depending on the socket's options; both forms work.
 * The socket connects to exactly what this returns, so no second resolution can rebind the name
 * between the check and the connect.
 */
export function guardedLookup(
  forbids: (ip: string) => boolean,
  resolve: Resolver = dnsLookup as unknown as Resolver,
): LookupFunction {
  return (hostname, options, callback) => {
    resolve(hostname, options as LookupAllOptions, (err, address, family) => {
      if (err !== null) return callback(err, '', 0);
      if (Array.isArray(address)) {
        const allowed = address.filter((a) => !forbids(a.address));
        if (allowed.length === 0) return callback(forbidden(hostname, address[0]?.address ?? ''), '', 0);
        return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, allowed);
      }
      if (forbids(address)) return callback(forbidden(hostname, address), '', 0);
      callback(null, address, family ?? 0);
    });
  };
}

function forbidden(hostname: string, address: string): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(
    `${hostname} resolves to the protected address ${address}; allow it explicitly with --allow`,
  );
  err.code = FORBIDDEN_ADDRESS;
  return err;
}

/**
 * The header list for the request to the target. A chunked body is framed chunked again (the
 * controller removed Transfer-Encoding as hop-by-hop). Without one no trailer can follow, so a
 * `Trailer` field is dropped: Node's client throws on it for a request that is not chunked (a GET
 * carrying `Trailer: x` would otherwise fail), and it would announce fields that never come.
 */
export function targetHeaders(head: RequestHead): string[] {
  if (head.chunked === true) return [...head.headers, 'Transfer-Encoding', 'chunked'];
  const raw = head.headers;
  let i = 0;
  while (i < raw.length && raw[i]!.toLowerCase() !== 'trailer') i += 2;
  if (i >= raw.length) return raw;
  const out: string[] = [];
  for (let j = 0; j + 1 < raw.length; j += 2) {
    if (raw[j]!.toLowerCase() !== 'trailer') out.push(raw[j]!, raw[j + 1]!);
  }
  return out;
}
