// The public TLS listener's certificates. A CertificateSource answers, for the name a client asks for
// in its handshake (SNI), which certificate to present. The one source today reads PEM pairs from
// files; an ACME source can implement the same interface later.
//
// Each certificate serves the DNS names in its subjectAltName (its subject's CN when it has none). An
// exact name beats a wildcard (`*.example.com` serves `shop.example.com`, not `example.com` nor
// `a.b.example.com`, as RFC 6125 has it); among equals the first certificate listed wins. A name no
// certificate serves gets the first certificate, or, with `unknownName: refuse`, no certificate at all,
// which ends the handshake.
//
// The files are read again when they change (polled once a second, which also sees the symlink swap
// a Kubernetes Secret volume makes) and on reload() (SIGHUP). A set that does not load whole (a file
// missing or half written, a key that does not match) leaves the current certificates in place and is
// logged; open connections are never touched, since a certificate is chosen per handshake.
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { Logger } from 'pino';
import { show } from '../config/values.js';
import { ConfigError } from '../errors.js';

/** One certificate and its key, as PEM file paths. */
export interface CertFiles {
  readonly cert: string;
  readonly key: string;
}

/** A certificate as loaded, for choosing it, for the metrics and for the logs. */
export interface LoadedCert {
  /** The DNS names it serves, wildcards as `*.example.com`. */
  readonly names: readonly string[];
  readonly subject: string;
  /** When it stops being valid, in ms since the epoch. */
  readonly notAfter: number;
  readonly context: SecureContext;
  /** The PEM, for the listener's default context (a handshake with no SNI). */
  readonly pem: { cert: Buffer; key: Buffer };
}

export interface CertificateSource {
  /** The certificate for a handshake that asked for `servername`; undefined refuses the handshake. */
  select(servername: string | undefined): LoadedCert | undefined;
  /** Every certificate in use now, in the order listed. */
  all(): readonly LoadedCert[];
  /** Reads the certificates again; resolves whether the new set is in use. */
  reload(): Promise<boolean>;
  /** Calls `listener` after each reload that changed the set. */
  onChange(listener: () => void): void;
  close(): void;
}

/** TLS 1.2 and 1.3 only, with Node's default ciphers. */
export const MIN_TLS_VERSION = 'TLSv1.2';
/** A certificate this close to its end is warned about at every load. */
export const EXPIRY_WARNING_MS = 14 * 24 * 60 * 60 * 1000;
const POLL_MS = 1000;

export interface FileCertificateOptions {
  readonly files: readonly CertFiles[];
  /** What a name no certificate serves gets. */
  readonly unknownName: 'first' | 'refuse';
  /** The config key of the list, for errors: `tls.certs`. */
  readonly key: string;
  readonly log: Logger;
  /** ALPN protocols to offer, in order of preference. */
  readonly alpn?: readonly string[];
  /** Whether to watch the files (tests of the loader turn it off). Default true. */
  readonly watch?: boolean;
}

export class FileCertificates implements CertificateSource {
  #set: CertSet;
  readonly #options: FileCertificateOptions;
  readonly #listeners: (() => void)[] = [];
  #closed = false;
  #reloading: Promise<boolean> | undefined;

  /** Loads every pair now; a file that is missing, unreadable or mismatched is a ConfigError naming it. */
  constructor(options: FileCertificateOptions) {
    this.#options = options;
    this.#set = loadSet(options);
    this.#warnExpiring(this.#set);
    if (options.watch !== false) {
      for (const path of watchedPaths(options.files)) {
        watchFile(path, { interval: POLL_MS, persistent: false }, (now, before) => {
          if (now.mtimeMs !== before.mtimeMs || now.ino !== before.ino || now.size !== before.size) {
            void this.reload();
          }
        });
      }
    }
  }

  select(servername: string | undefined): LoadedCert | undefined {
    const set = this.#set;
    if (servername === undefined || servername === '') return set.certs[0];
    const name = servername.toLowerCase();
    const exact = set.exact.get(name);
    if (exact !== undefined) return exact;
    const dot = name.indexOf('.');
    const wildcard = dot > 0 ? set.wildcard.get(name.slice(dot + 1)) : undefined;
    if (wildcard !== undefined) return wildcard;
    return this.#options.unknownName === 'first' ? set.certs[0] : undefined;
  }

  all(): readonly LoadedCert[] {
    return this.#set.certs;
  }

  reload(): Promise<boolean> {
    // Reloads run one at a time; a change noticed during one is read by the next.
    const next = (this.#reloading ?? Promise.resolve(true)).then(() => this.#reloadNow());
    this.#reloading = next;
    return next;
  }

  onChange(listener: () => void): void {
    this.#listeners.push(listener);
  }

  close(): void {
    this.#closed = true;
    for (const path of watchedPaths(this.#options.files)) unwatchFile(path);
  }

  #reloadNow(): boolean {
    if (this.#closed) return false;
    const { log } = this.#options;
    let set: CertSet;
    try {
      set = loadSet(this.#options);
    } catch (err) {
      log.error(
        { event: 'tls-reload-failed', err: (err as Error).message },
        'the new certificates were not loaded; the current ones stay in use',
      );
      return false;
    }
    this.#set = set;
    log.info(
      { event: 'tls-reloaded', certs: set.certs.map((c) => ({ names: c.names, notAfter: iso(c.notAfter) })) },
      'certificates reloaded',
    );
    this.#warnExpiring(set);
    for (const listener of this.#listeners) listener();
    return true;
  }

  #warnExpiring(set: CertSet): void {
    const now = Date.now();
    for (const cert of set.certs) {
      const left = cert.notAfter - now;
      if (left >= EXPIRY_WARNING_MS) continue;
      this.#options.log.warn(
        { event: 'tls-cert-expiring', names: cert.names, notAfter: iso(cert.notAfter), expired: left <= 0 },
        left <= 0 ? 'a certificate has expired' : 'a certificate expires within 14 days',
      );
    }
  }
}

interface CertSet {
  readonly certs: readonly LoadedCert[];
  /** Exact names to the first certificate that serves them. */
  readonly exact: ReadonlyMap<string, LoadedCert>;
  /** `example.com` for `*.example.com`, to the first certificate that serves it. */
  readonly wildcard: ReadonlyMap<string, LoadedCert>;
}

function loadSet(options: FileCertificateOptions): CertSet {
  const certs = options.files.map((files, i) => loadPair(files, `${options.key}[${i}]`, options.alpn));
  const exact = new Map<string, LoadedCert>();
  const wildcard = new Map<string, LoadedCert>();
  for (const cert of certs) {
    for (const name of cert.names) {
      const [map, key] = name.startsWith('*.') ? [wildcard, name.slice(2)] : [exact, name];
      if (!map.has(key)) map.set(key, cert);
    }
  }
  return { certs, exact, wildcard };
}

function loadPair(files: CertFiles, key: string, alpn: readonly string[] | undefined): LoadedCert {
  const cert = read(`${key}.cert`, files.cert);
  const pem = read(`${key}.key`, files.key);
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new ConfigError(
      `${key}.cert`,
      `file ${show(files.cert)} is not a PEM certificate: ${(err as Error).message}`,
      'SLUICE_ERR_TLS_CONFIG',
    );
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(pem);
  } catch (err) {
    throw new ConfigError(
      `${key}.key`,
      `file ${show(files.key)} is not a PEM private key: ${(err as Error).message}`,
      'SLUICE_ERR_TLS_CONFIG',
    );
  }
  if (!x509.checkPrivateKey(privateKey)) {
    throw new ConfigError(
      `${key}.key`,
      `file ${show(files.key)} is not the key of the certificate in ${show(files.cert)}`,
      'SLUICE_ERR_TLS_CONFIG',
    );
  }
  const names = dnsNames(x509);
  if (names.length === 0) {
    throw new ConfigError(
      `${key}.cert`,
      `file ${show(files.cert)} names no DNS name (subjectAltName or CN)`,
      'SLUICE_ERR_TLS_CONFIG',
    );
  }
  const context = createSecureContext({
    cert,
    key: pem,
    minVersion: MIN_TLS_VERSION,
    ...(alpn === undefined ? {} : { ALPNProtocols: [...alpn] }),
  });
  return {
    names,
    subject: x509.subject,
    notAfter: Date.parse(x509.validTo),
    context,
    pem: { cert, key: pem },
  };
}

function read(key: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError(
      key,
      `file ${show(path)} cannot be read: ${(err as Error).message}`,
      'SLUICE_ERR_TLS_CONFIG',
      {
        cause: err,
      },
    );
  }
}

/** The DNS names of the subjectAltName, lowercased; the subject's CN when there are none. */
export function dnsNames(x509: X509Certificate): string[] {
  const san = x509.subjectAltName;
  if (san !== undefined) {
    const names = san
      .split(', ')
      .filter((entry) => entry.startsWith('DNS:'))
      .map((entry) => entry.slice(4).toLowerCase());
    if (names.length > 0) return names;
  }
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(x509.subject)?.[1];
  return cn === undefined ? [] : [cn.toLowerCase()];
}

function watchedPaths(files: readonly CertFiles[]): string[] {
  return [...new Set(files.flatMap((f) => [f.cert, f.key]))];
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
