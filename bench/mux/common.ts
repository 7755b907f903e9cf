// Shared by the processes of the mux bench: the relay splice, the relays' IPC and the sink's mode
// bytes. The IPC plumbing and statistics helpers are bench/common's.
import type { Duplex } from 'node:stream';
import type { Session } from '../../src/tunnel/session.js';
import { serveIpc } from '../common/ipc.js';
import { MB, withTimeout } from '../common/stats.js';

export const HOST = '127.0.0.1';

/**
 * The first byte a client writes to the sink picks what the sink does with the connection. It is
 * not counted as payload.
 */
export const Mode = {
  /** Read and discard; on FIN answer the byte count as one line and end. */
  DISCARD: 0x44, // 'D'
  /** Write every byte back; end after the peer's FIN. */
  ECHO: 0x45, // 'E'
  /** Like DISCARD, but read at SLOW_READ_BPS with a token bucket (pause/resume). */
  SLOW: 0x53, // 'S'
  /** Answer one byte, then hold the connection idle until the peer's FIN. */
  HOLD: 0x48, // 'H'
} as const;

export const SLOW_READ_BPS = 10 * MB;

// --- relays ---

/** Per-process counters a relay reports with `stats`. */
export class Counters {
  accepted = 0;
  active = 0;
  errors = new Map<string, number>();

  error(err: Error): void {
    const code = (err as { code?: unknown }).code;
    const key = typeof code === 'string' ? code : err.name;
    this.errors.set(key, (this.errors.get(key) ?? 0) + 1);
  }

  toJSON(): Record<string, unknown> {
    return { accepted: this.accepted, active: this.active, errors: Object.fromEntries(this.errors) };
  }
}

function doneCleanly(d: Duplex): boolean {
  return d.readableEnded && d.writableFinished;
}

/**
 * Pipes `a` and `b` into each other. A FIN travels on its own (both sides allow half-open), so
 * each direction ends independently. A side that closes without having finished both directions
 * (error, reset, destroy) destroys the other side too.
 */
export function splice(a: Duplex, b: Duplex, counters: Counters): void {
  counters.accepted += 1;
  counters.active += 1;
  let open = 2;
  const onError = (err: Error) => counters.error(err);
  const onClose = (self: Duplex, other: Duplex) => () => {
    if (!doneCleanly(self)) other.destroy();
    if (--open === 0) counters.active -= 1;
  };
  a.on('error', onError);
  b.on('error', onError);
  a.on('close', onClose(a, b));
  b.on('close', onClose(b, a));
  a.pipe(b);
  b.pipe(a);
}

/** What a relay knows of its tunnel, read when a request comes in. */
export interface RelayTunnel {
  session: Session | null;
  error: string;
}

/**
 * The IPC both relays serve: counters and session stats, and a graceful drain that checks
 * session.close() completes once the streams are done.
 */
export function serveRelayIpc(counters: Counters, tunnel: () => RelayTunnel): void {
  serveIpc({
    stats: () => {
      const { session, error } = tunnel();
      return { ...counters.toJSON(), session: session?.stats() ?? null, sessionError: error };
    },
    closeSession: async () => {
      const { session, error } = tunnel();
      if (session === null) return { closed: false, error };
      const start = performance.now();
      await withTimeout(session.close(2000), 5000, 'session.close(2000)');
      return { closed: true, ms: Math.round(performance.now() - start) };
    },
  });
}
