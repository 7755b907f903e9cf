// `sluice dev`'s HTTPS certificate: self-signed, for demo.localhost, every other *.localhost name,
// localhost and 127.0.0.1, kept in dev's data dir so that a browser or curl told to trust it once goes
// on trusting it across restarts. It is reused while it parses, matches its key, serves those names and
// has more than 14 days left (the controller's expiry warning, so dev never warns about its own);
// otherwise it is made again, and the log line says why. Apart from config.ts, so that checking dev's
// flags does not load the X.509 library.
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { generate } from 'selfsigned';
import { show } from '../config/values.js';
import { EXPIRY_WARNING_MS } from '../controller/certificates.js';
import { ConfigError } from '../errors.js';
import { type DevCertPaths, devCertPaths } from './config.js';

/** The DNS names of its subjectAltName; 127.0.0.1 is there too, as an IP address. */
export const DEV_CERT_NAMES = ['demo.localhost', '*.localhost', 'localhost'] as const;
export const DEV_CERT_IP = '127.0.0.1';
const DAY_MS = 24 * 60 * 60 * 1000;
/** A year: long enough not to be made again often, under what browsers take for a trusted leaf. */
const VALIDITY_MS = 365 * DAY_MS;
/** Issued this far in the past, so that a clock a little behind still takes it. */
const BACKDATE_MS = 60 * 60 * 1000;

/** The certificate dev serves, as written or reused. */
export interface DevCertificate extends DevCertPaths {
  /** SHA-256 of the DER, colon-separated hex, as browsers and `openssl x509 -fingerprint` show it. */
  readonly fingerprint: string;
  readonly notAfter: string;
}

/** Why a certificate is made: what was wrong with the files, or that there were none. */
interface Unusable {
  readonly reason:
    'missing' | 'unreadable' | 'corrupt' | 'key-mismatch' | 'expiring' | 'not-yet-valid' | 'names';
  readonly detail: string;
}

/**
 * The certificate in `dir`, made first when the files are missing or not fit to serve. A directory
 * that cannot hold it is a ConfigError naming dataDir (exit 2).
 */
export async function ensureDevCertificate(
  dir: string,
  log: Logger,
  now = Date.now(),
): Promise<DevCertificate> {
  const paths = devCertPaths(dir);
  const found = inspect(paths, now);
  if (found instanceof X509Certificate) {
    tightenKeyMode(paths.key);
    const cert = described(paths, found);
    log.info({ event: 'dev-cert-reused', ...cert }, 'reusing the self-signed certificate of sluice dev');
    return cert;
  }
  const made = await makeCertificate(now);
  write(dir, paths, made);
  const cert = described(paths, new X509Certificate(made.cert));
  log.info(
    { event: 'dev-cert-generated', reason: found.reason, detail: found.detail, ...cert },
    `made a self-signed certificate for sluice dev: ${found.detail}`,
  );
  return cert;
}

/** The certificate when the pair is fit to serve for more than 14 days; else why not. */
function inspect(paths: DevCertPaths, now: number): X509Certificate | Unusable {
  const certPem = readIfThere(paths.cert);
  const keyPem = readIfThere(paths.key);
  for (const [path, pem] of [
    [paths.cert, certPem],
    [paths.key, keyPem],
  ] as const) {
    if (pem === undefined) return { reason: 'missing', detail: `${show(path)} is missing` };
    if (pem instanceof Error) return { reason: 'unreadable', detail: `${show(path)}: ${pem.message}` };
  }
  let x509: X509Certificate;
  let key;
  try {
    x509 = new X509Certificate(certPem as Buffer);
    key = createPrivateKey(keyPem as Buffer);
  } catch (err) {
    return {
      reason: 'corrupt',
      detail: `${show(paths.cert)} or its key is not PEM: ${(err as Error).message}`,
    };
  }
  if (!x509.checkPrivateKey(key)) {
    return { reason: 'key-mismatch', detail: `${show(paths.key)} is not the key of ${show(paths.cert)}` };
  }
  if (Date.parse(x509.validTo) - now <= EXPIRY_WARNING_MS) {
    return { reason: 'expiring', detail: `it is valid until ${x509.validTo}, less than 14 days from now` };
  }
  if (Date.parse(x509.validFrom) > now) {
    return { reason: 'not-yet-valid', detail: `it is not valid before ${x509.validFrom}` };
  }
  if (!servesDevNames(x509)) {
    return { reason: 'names', detail: `it does not serve ${[...DEV_CERT_NAMES, DEV_CERT_IP].join(', ')}` };
  }
  return x509;
}

function servesDevNames(x509: X509Certificate): boolean {
  const san = new Set((x509.subjectAltName ?? '').split(', '));
  return DEV_CERT_NAMES.every((name) => san.has(`DNS:${name}`)) && san.has(`IP Address:${DEV_CERT_IP}`);
}

/** The file's bytes, undefined when there is none, or the error that kept it from being read. */
function readIfThere(path: string): Buffer | Error | undefined {
  try {
    return readFileSync(path);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? undefined : (err as Error);
  }
}

/** An EC P-256 leaf for the dev names, signed by its own key, good for a server and nothing else. */
function makeCertificate(now: number): Promise<{ cert: string; key: string }> {
  const attrs = [
    { name: 'commonName', value: DEV_CERT_NAMES[0] },
    { name: 'organizationName', value: 'sluice dev (self-signed)' },
  ];
  return generate(attrs, {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: new Date(now - BACKDATE_MS),
    notAfterDate: new Date(now + VALIDITY_MS),
    extensions: [
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      {
        name: 'subjectAltName',
        altNames: [
          ...DEV_CERT_NAMES.map((value) => ({ type: 2 as const, value })),
          { type: 7, ip: DEV_CERT_IP },
        ],
      },
    ],
  }).then((pems) => ({ cert: pems.cert, key: pems.private }));
}

/**
 * Writes the pair, each file whole through a rename, the key 0600 from its first byte. The key goes
 * first: a stop between the two leaves a pair that does not match, which the next start makes again.
 */
function write(dir: string, paths: DevCertPaths, made: { cert: string; key: string }): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    replaceFile(paths.key, made.key, 0o600);
    replaceFile(paths.cert, made.cert, 0o644);
  } catch (err) {
    throw new ConfigError(
      'dataDir',
      `${show(dir)} cannot hold the certificate of sluice dev: ${(err as Error).message}`,
      'SLUICE_ERR_INVALID_OPTION',
      { cause: err },
    );
  }
}

function replaceFile(path: string, text: string, mode: number): void {
  const temporary = `${path}.${process.pid}.tmp`;
  // A leftover of a start that died here would keep its old mode, since `mode` applies on create only.
  rmSync(temporary, { force: true });
  writeFileSync(temporary, text, { mode, flag: 'wx' });
  renameSync(temporary, path);
}

/** A reused key others can read (copied in by hand, say) is made the owner's alone, as a new one is. */
function tightenKeyMode(path: string): void {
  if ((statSync(path).mode & 0o077) !== 0) chmodSync(path, 0o600);
}

function described(paths: DevCertPaths, x509: X509Certificate): DevCertificate {
  return { ...paths, fingerprint: x509.fingerprint256, notAfter: new Date(x509.validTo).toISOString() };
}
