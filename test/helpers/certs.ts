// A throwaway CA and a server certificate it signed, made with the openssl CLI so that tests need no
// certificate library. The server certificate names localhost and 127.0.0.1 (subjectAltName), the way
// the tunnel tests dial it. Made once per process.
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

export interface TestCerts {
  /** PEM of the CA that signed `cert`. */
  ca: string;
  cert: string;
  key: string;
  /** The directory holding ca.pem, server.pem and server.key. */
  dir: string;
}

const run = promisify(execFile);
const OPENSSL = '/usr/bin/openssl';
const EC_P256 = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

// A config of our own so that the system openssl.cnf (or its absence) does not change the result.
const CONFIG = [
  '[req]',
  'distinguished_name = dn',
  'x509_extensions = ca_ext',
  'prompt = no',
  '[dn]',
  'CN = Sluice Test CA',
  '[ca_ext]',
  'basicConstraints = critical, CA:TRUE',
  'keyUsage = critical, keyCertSign, cRLSign',
  'subjectKeyIdentifier = hash',
  '',
].join('\n');

const SERVER_EXTENSIONS = [
  'basicConstraints = critical, CA:FALSE',
  'keyUsage = critical, digitalSignature',
  'extendedKeyUsage = serverAuth',
  'subjectAltName = DNS:localhost, IP:127.0.0.1',
  'subjectKeyIdentifier = hash',
  'authorityKeyIdentifier = keyid',
  '',
].join('\n');

let cached: Promise<TestCerts> | undefined;

export function makeTestCerts(): Promise<TestCerts> {
  cached ??= generate();
  return cached;
}

async function generate(): Promise<TestCerts> {
  const dir = await mkdtemp(join(tmpdir(), 'sluice-certs-'));
  // 'exit' runs only synchronous code, hence rmSync.
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const openssl = (...args: string[]) => run(OPENSSL, args, { cwd: dir });
  await writeFile(join(dir, 'openssl.cnf'), CONFIG);
  await writeFile(join(dir, 'server.ext'), SERVER_EXTENSIONS);
  const req = ['req', '-config', 'openssl.cnf', ...EC_P256];
  await openssl(...req, '-x509', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2');
  await openssl(...req, '-new', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost');
  await openssl(
    ...['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial'],
    ...['-out', 'server.pem', '-days', '2', '-extfile', 'server.ext'],
  );
  const [ca, cert, key] = await Promise.all(
    ['ca.pem', 'server.pem', 'server.key'].map((name) => readFile(join(dir, name), 'utf8')),
  );
  return { ca: ca!, cert: cert!, key: key!, dir };
}

export interface IssuedCert {
  /** PEM file paths in the CA's directory. */
  certFile: string;
  keyFile: string;
  cert: string;
}

let serial = 0;

/**
 * A server certificate for `names` (DNS names, wildcards allowed), signed by the test CA, written as
 * `<file>.pem` and `<file>.key` in the CA's directory (or `dir`). `days` may be 1 for one about to
 * expire; the subject's CN is `cn` (default the first name).
 */
export async function issueCert(
  names: readonly string[],
  options: { file?: string; dir?: string; days?: number; cn?: string } = {},
): Promise<IssuedCert> {
  const certs = await makeTestCerts();
  const dir = options.dir ?? certs.dir;
  const file = options.file ?? `leaf-${++serial}`;
  const openssl = (...args: string[]) => run(OPENSSL, args, { cwd: certs.dir });
  const ext = join(certs.dir, `${file}-${serial}.ext`);
  await writeFile(
    ext,
    SERVER_EXTENSIONS.replace(
      'subjectAltName = DNS:localhost, IP:127.0.0.1',
      `subjectAltName = ${names.map((n) => `DNS:${n}`).join(', ')}`,
    ),
  );
  const keyFile = join(dir, `${file}.key`);
  const certFile = join(dir, `${file}.pem`);
  const csr = join(certs.dir, `${file}-${serial}.csr`);
  await openssl(
    'req',
    '-config',
    'openssl.cnf',
    ...EC_P256,
    '-new',
    '-keyout',
    keyFile,
    '-out',
    csr,
    '-subj',
    `/CN=${options.cn ?? names[0]}`,
  );
  await openssl(
    ...['x509', '-req', '-in', csr, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial'],
    ...['-out', certFile, '-days', String(options.days ?? 2), '-extfile', ext],
  );
  return { certFile, keyFile, cert: await readFile(certFile, 'utf8') };
}
