// The self-signed certificate of `sluice dev` (src/dev/certificate.ts): made into the data dir when
// missing, with the names, key type and file modes the issue asks for; reused while it fits; made again,
// with a log line saying why, when it is corrupt, not its key's, expiring, not yet valid or for other
// names; and a data dir that cannot hold it is a ConfigError naming dataDir.
import assert from 'node:assert/strict';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { generate } from 'selfsigned';
import { ensureDevCertificate } from '../../src/dev/certificate.js';
import { devCertPaths } from '../../src/dev/config.js';
import { ConfigError } from '../../src/errors.js';
import { captureLog } from '../helpers/log-capture.js';

const DAY = 24 * 60 * 60 * 1000;
const root = mkdtempSync(join(tmpdir(), 'sluice-dev-cert-'));
let dirs = 0;

function freshDir(): string {
  return join(root, `d${++dirs}`);
}

after(() => rmSync(root, { recursive: true, force: true }));

/** What the files in `dir` hold now: the certificate, and whether the key is its own. */
function onDisk(dir: string): { x509: X509Certificate; matches: boolean } {
  const paths = devCertPaths(dir);
  const x509 = new X509Certificate(readFileSync(paths.cert));
  return { x509, matches: x509.checkPrivateKey(createPrivateKey(readFileSync(paths.key))) };
}

/** Ensures the certificate in `dir` and says whether it was made, and why. */
async function ensure(dir: string, now?: number) {
  const log = captureLog();
  const cert = await ensureDevCertificate(dir, log.logger, now);
  const [made] = log.events('dev-cert-generated');
  const reused = log.events('dev-cert-reused').length === 1;
  assert.notEqual(made !== undefined, reused, 'one line: made or reused');
  return { cert, reason: made?.reason, line: made ?? log.events('dev-cert-reused')[0]! };
}

describe('the sluice dev certificate', () => {
  test('a missing one is made: EC P-256, the dev names, a key of mode 0600 in a new directory', async () => {
    const dir = freshDir();
    const { cert, reason, line } = await ensure(dir);
    assert.equal(reason, 'missing');
    assert.match(
      String(line.msg),
      /made a self-signed certificate for sluice dev: .*dev-cert\.pem" is missing/,
    );
    const { x509, matches } = onDisk(dir);
    assert.ok(matches);
    assert.equal(
      x509.subjectAltName,
      'DNS:demo.localhost, DNS:*.localhost, DNS:localhost, IP Address:127.0.0.1',
    );
    assert.equal(x509.publicKey.asymmetricKeyType, 'ec');
    assert.equal(x509.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.equal(x509.ca, false);
    // Self-signed: its own issuer, signed by its own key. (checkIssued would say no: a leaf's key usage
    // has no keyCertSign, which OpenSSL asks of an issuer.)
    assert.equal(x509.issuer, x509.subject);
    assert.ok(x509.verify(x509.publicKey), 'signed by its own key');
    assert.ok(Date.parse(x509.validTo) - Date.now() > 300 * DAY, x509.validTo);
    assert.ok(Date.parse(x509.validFrom) <= Date.now());
    assert.equal(cert.fingerprint, x509.fingerprint256);
    assert.equal(cert.cert, join(dir, 'dev-cert.pem'));
    assert.equal(cert.key, join(dir, 'dev-key.pem'));
    assert.equal(statSync(cert.key).mode & 0o777, 0o600);
    assert.equal(statSync(dir).mode & 0o777, 0o700);
  });

  test('a fit one is reused as it is, the second time and the third', async () => {
    const dir = freshDir();
    const first = await ensure(dir);
    const bytes = readFileSync(first.cert.cert);
    for (let i = 0; i < 2; i++) {
      const again = await ensure(dir);
      assert.equal(again.reason, undefined);
      assert.equal(again.cert.fingerprint, first.cert.fingerprint);
      assert.equal(again.line.fingerprint, first.cert.fingerprint);
      assert.deepEqual(readFileSync(first.cert.cert), bytes);
    }
  });

  test('a reused key that others can read is made 0600', async () => {
    const dir = freshDir();
    const { cert } = await ensure(dir);
    chmodSync(cert.key, 0o644);
    assert.equal((await ensure(dir)).reason, undefined);
    assert.equal(statSync(cert.key).mode & 0o777, 0o600);
  });

  for (const [what, spoil] of [
    [
      'a certificate file that is not PEM',
      (p: { cert: string }) => writeFileSync(p.cert, 'not a certificate\n'),
    ],
    [
      'a key file that is not PEM',
      (p: { key: string }) => writeFileSync(p.key, '-----BEGIN PRIVATE KEY-----\nxx'),
    ],
    ['an empty certificate file (a write cut short)', (p: { cert: string }) => writeFileSync(p.cert, '')],
  ] as const) {
    test(`${what} is replaced (corrupt)`, async () => {
      const dir = freshDir();
      const first = await ensure(dir);
      spoil(devCertPaths(dir));
      const again = await ensure(dir);
      assert.equal(again.reason, 'corrupt');
      assert.notEqual(again.cert.fingerprint, first.cert.fingerprint);
      assert.ok(onDisk(dir).matches);
      assert.equal(statSync(again.cert.key).mode & 0o777, 0o600);
    });
  }

  test('a missing key is made again with its certificate', async () => {
    const dir = freshDir();
    const first = await ensure(dir);
    rmSync(first.cert.key);
    const again = await ensure(dir);
    assert.equal(again.reason, 'missing');
    assert.match(String(again.line.detail), /dev-key\.pem" is missing/);
    assert.ok(onDisk(dir).matches);
  });

  test("another certificate's key is a mismatch, and both are made again", async () => {
    const dir = freshDir();
    const other = freshDir();
    await ensure(dir);
    await ensure(other);
    copyFileSync(devCertPaths(other).key, devCertPaths(dir).key);
    const again = await ensure(dir);
    assert.equal(again.reason, 'key-mismatch');
    assert.ok(onDisk(dir).matches);
  });

  test('one with 14 days or less left is made again; with more, it is kept', async () => {
    const dir = freshDir();
    const { cert } = await ensure(dir);
    const end = Date.parse(cert.notAfter);
    assert.equal((await ensure(dir, end - 15 * DAY)).reason, undefined);
    const late = await ensure(dir, end - 14 * DAY);
    assert.equal(late.reason, 'expiring');
    assert.match(String(late.line.msg), /less than 14 days from now/);
    assert.ok(Date.parse(late.cert.notAfter) > end, 'the new one lasts longer');
  });

  test('an expired one is made again', async () => {
    const dir = freshDir();
    const { cert } = await ensure(dir);
    assert.equal((await ensure(dir, Date.parse(cert.notAfter) + DAY)).reason, 'expiring');
  });

  test('one not valid yet (a clock set back) is made again', async () => {
    const dir = freshDir();
    await ensure(dir);
    assert.equal((await ensure(dir, Date.now() - 2 * DAY)).reason, 'not-yet-valid');
  });

  test('one for other names is made again', async () => {
    const dir = freshDir();
    await ensure(dir);
    const pems = await generate([{ name: 'commonName', value: 'localhost' }], {
      keyType: 'ec',
      algorithm: 'sha256',
      extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }] }],
    });
    writeFileSync(devCertPaths(dir).cert, pems.cert);
    writeFileSync(devCertPaths(dir).key, pems.private);
    const again = await ensure(dir);
    assert.equal(again.reason, 'names');
    assert.match(
      String(again.line.detail),
      /does not serve demo\.localhost, \*\.localhost, localhost, 127\.0\.0\.1/,
    );
    assert.match(onDisk(dir).x509.subjectAltName!, /DNS:demo\.localhost/);
  });

  test('a data dir that cannot be made is a ConfigError naming dataDir', async () => {
    const file = join(root, 'a-file');
    writeFileSync(file, '');
    await assert.rejects(
      ensureDevCertificate(join(file, 'data'), captureLog().logger),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.key === 'dataDir' &&
        /cannot hold the certificate of sluice dev: .*ENOTDIR/.test(err.message),
    );
  });
});
