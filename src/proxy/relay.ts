// Sends a target's response down a tunnel stream as records (docs/http-over-streams.md): HEAD, then
// BODY records with backpressure, optional TRAILERS, then FIN. Shared by plain exchanges and refused
// upgrades, which are answered the same way.
import type { IncomingMessage } from 'node:http';
import type { Duplex, Writable } from 'node:stream';
import { wantsCompactHeads } from './meta.js';
import {
  encodeBodyHeader,
  encodeCompactHead,
  encodeHead,
  encodeTrailers,
  MAX_BODY_PAYLOAD,
} from './envelope.js';

/**
 * Relays `res` into `stream` and ends it. `onBroken` is called when the target's connection closes
 * before the body is complete; the caller resets the stream so the client is cut, not misled.
 * `meta` is the stream's: its opener may read compact heads. Returns a function that stops relaying
 * (for a stream that was reset meanwhile).
 */
export function relayResponse(
  res: IncomingMessage,
  stream: Duplex,
  meta: object,
  onBroken: () => void,
): () => void {
  const status = res.statusCode ?? 502;
  const statusText = res.statusMessage ?? '';
  stream.write(
    wantsCompactHeads(meta)
      ? encodeCompactHead(status, statusText, res.rawHeaders)
      : encodeHead({ status, statusText, headers: res.rawHeaders }),
  );
  const onData = (chunk: Buffer): void => {
    if (!writeBody(stream, chunk)) res.pause();
  };
  const onDrain = (): void => {
    res.resume();
  };
  const onEnd = (): void => {
    if (res.rawTrailers.length > 0) stream.write(encodeTrailers(res.rawTrailers));
    stream.end();
  };
  const onClose = (): void => {
    stop();
    if (!res.complete) onBroken();
  };
  const stop = (): void => {
    res.off('data', onData);
    res.off('end', onEnd);
    res.off('close', onClose);
    stream.off('drain', onDrain);
  };
  res.on('data', onData);
  res.on('end', onEnd);
  res.on('close', onClose);
  stream.on('drain', onDrain);
  return stop;
}

/** Writes `chunk` as BODY records (split at the record limit). Returns what the last write returned. */
export function writeBody(stream: Duplex, chunk: Buffer): boolean {
  let ok = true;
  stream.cork();
  for (let off = 0; off < chunk.length; off += MAX_BODY_PAYLOAD) {
    const piece = chunk.subarray(off, off + MAX_BODY_PAYLOAD);
    stream.write(encodeBodyHeader(piece.length));
    ok = stream.write(piece);
  }
  stream.uncork();
  return ok;
}

/**
 * Corks `w` until the end of this tick, unless it is corked already. A tunnel read hands over every
 * piece it holds in one go (record and frame boundaries split a body into several), and this makes
 * them leave as one write rather than one system call each.
 */
export function corkForThisTick(w: Pick<Writable, 'cork' | 'uncork' | 'writableCorked'>): void {
  if (w.writableCorked !== 0) return;
  w.cork();
  process.nextTick(uncork, w);
}

function uncork(w: Pick<Writable, 'uncork'>): void {
  w.uncork();
}
