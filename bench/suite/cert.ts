// The one certificate of the TLS paths (issue #14): an EC P-256 key and a self-signed certificate for
// bench.test and 127.0.0.1, made with openssl into the rig's temp dir. nginx and Sluice serve the same
// pair, made once per run, so the handshakes cost both the same; the load generators do not verify it.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { BENCH_HOST, HOST } from './common.js';
import { binaryOnPath } from './ports.js';

const run = promisify(execFile);

export interface CertPair {
  cert: string;
  key: string;
}

export function opensslBinary(): string | null {
  return binaryOnPath('openssl');
}

let shared: Promise<CertPair> | null = null;

/** The run's pair, made on first use in a temp dir that is removed when the orchestrator exits. */
export function benchCert(): Promise<CertPair> {
  if (shared === null) {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-cert-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    shared = makeCert(dir);
  }
  return shared;
}

export async function makeCert(dir: string): Promise<CertPair> {
  const openssl = opensslBinary();
  if (openssl === null) throw new Error('openssl not found (apt-get install openssl)');
  const pair = { cert: join(dir, 'bench.crt'), key: join(dir, 'bench.key') };
  // prime256v1 is P-256; -nodes: the servers read the key without a passphrase.
  const args = [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-days',
    '30',
    '-subj',
    `/CN=${BENCH_HOST}`,
    '-addext',
    `subjectAltName=DNS:${BENCH_HOST},IP:${HOST}`,
    '-keyout',
    pair.key,
    '-out',
    pair.cert,
  ];
  await run(openssl, args, { timeout: 15_000 });
  return pair;
}
