// Deterministic-size payload generation and hashing for byte-exact transfer checks.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';

const BASE = randomBytes(1024 * 1024);

/**
 * Writes `total` bytes in chunks of `chunkSize`, each chunk stamped with its index so that a lost,
 * repeated or reordered chunk changes the hash. Respects backpressure. Resolves with the sha256.
 */
export async function writePattern(
  w: Writable,
  total: number,
  chunkSize = 64 * 1024,
  end = true,
): Promise<string> {
  const hash = createHash('sha256');
  let sent = 0;
  let index = 0;
  while (sent < total) {
    const n = Math.min(chunkSize, total - sent);
    const chunk = Buffer.allocUnsafe(n);
    BASE.copy(chunk, 0, (index * 7919) % (BASE.length - n), ((index * 7919) % (BASE.length - n)) + n);
    if (n >= 4) chunk.writeUInt32BE(index >>> 0, 0);
    hash.update(chunk);
    sent += n;
    index++;
    if (!w.write(chunk)) await once(w, 'drain');
  }
  if (end) w.end();
  return hash.digest('hex');
}

/**
 * Reads to the end; resolves with the byte count and sha256. Uses events, not `for await`, because the
 * async iterator destroys a Duplex when it ends, which would reset a half-open stream.
 */
export function readAll(r: Readable): Promise<{ bytes: number; sha256: string }> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    let bytes = 0;
    r.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      bytes += chunk.length;
    });
    r.once('end', () => resolve({ bytes, sha256: hash.digest('hex') }));
    r.once('error', reject);
  });
}

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;
