// Shared by every process of the mux bench: the IPC protocol between the orchestrator and its
// children, the relay splice, the sink's mode bytes and small statistics helpers.
import type { Duplex } from 'node:stream';
import type { Session } from '../../src/tunnel/session.js';

export const HOST = '127.0.0.1';
export const MB = 1e6;
export const MiB = 1024 * 1024;

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

// --- IPC: child side ---

export type Args = Record<string, unknown>;
export type Handler = (args: Args) => unknown;

interface Request {
  type: 'req';
  id: number;
  cmd: string;
  args: Args;
}

/** A message a child sends on its own: readiness (`ready`) or a named event. */
export interface ChildMessage {
  type: 'ready' | 'event' | 'res';
  [key: string]: unknown;
}

declare const gc: (() => void) | undefined;

function rss(args: Args): number {
  if (args.gc === true && typeof gc === 'function') {
    gc();
    gc();
  }
  return process.memoryUsage().rss;
}

/**
 * Answers the orchestrator's requests with `handlers` (plus `rss`). The child exits when the
 * orchestrator goes away, so no process outlives a run.
 */
export function serveIpc(handlers: Record<string, Handler>): void {
  const all: Record<string, Handler> = { rss, ...handlers };
  process.on('message', (msg: Request) => {
    if (msg?.type !== 'req') return;
    const handler = all[msg.cmd];
    Promise.resolve()
      .then(() => {
        if (handler === undefined) throw new Error(`unknown command ${msg.cmd}`);
        return handler(msg.args);
      })
      .then(
        (result) => send({ type: 'res', id: msg.id, ok: true, result }),
        (err: Error) => send({ type: 'res', id: msg.id, ok: false, error: err.stack ?? String(err) }),
      );
  });
  process.on('disconnect', () => process.exit(0));
  // A normal exit on SIGTERM lets --cpu-prof and --heap-prof write their files.
  process.on('SIGTERM', () => process.exit(0));
}

export function send(msg: ChildMessage): void {
  process.send?.(msg);
}

export function sendReady(info: Args): void {
  send({ type: 'ready', ...info });
}

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

  toJSON(): Args {
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

// --- statistics ---

export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export function median(values: number[]): number {
  return percentile(
    [...values].sort((x, y) => x - y),
    50,
  );
}

export function round(n: number | null | undefined, digits = 0): number | null {
  if (n === null || n === undefined || !Number.isFinite(n)) return null;
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

export function elapsedMs(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e6;
}

/** Rejects after `ms` unless `promise` settles first; the timer never keeps the process alive. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${Math.round(ms)} ms`)), ms);
    timer.unref();
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export function num(args: Args, key: string): number {
  const v = args[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`argument ${key} must be a number`);
  return v;
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
