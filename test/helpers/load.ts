// Steady HTTP load for resilience tests: requests at a fixed rate through the controller, each with its
// own X-Request-Id so that a result can be matched with the controller's log line. Every request has a
// deadline, so a hang shows up as an error instead of a stuck test.
import { type Agent, request } from 'node:http';
import { EVENT_MS, READY_MS, scaled, within } from './wait.js';

export interface LoadOptions {
  port: number;
  host: string;
  path: string;
  /** Requests per second. */
  rate: number;
  /** A keep-alive agent to reuse connections; default: a new connection per request. */
  agent?: Agent;
  /** Requests in flight at most; a tick that would exceed it skips (and counts) the request. */
  maxInFlight?: number;
  /**
   * Per-request deadline (scaled), counted from the send, so it includes a wait for a free socket of
   * `agent`. Default EVENT_MS: generous, as a busy machine can be slow; a request still without an
   * answer by then is `timeout`, a hung one.
   */
  timeoutMs?: number;
  /** Request ids start with this. */
  prefix?: string;
}

export interface LoadResult {
  id: string;
  /** performance.now() when the request was sent and when it settled. */
  sentAt: number;
  doneAt: number;
  /** 0 when no response came. */
  status: number;
  /** Set when the request failed without a complete response (ECONNRESET, timeout, ...). */
  error?: string;
  /**
   * Whether the whole request was written to a connection. A `timeout` that was not still waited in
   * the client for a free socket of its agent: the machine was slow, and Sluice never saw it.
   */
  written: boolean;
}

export class Load {
  readonly results: LoadResult[] = [];
  /** Requests not sent because maxInFlight was reached. */
  skipped = 0;
  /** The most requests in flight at once: high when the machine (or Sluice) was slow. */
  peakInFlight = 0;
  readonly #options: LoadOptions;
  #timer: NodeJS.Timeout | null = null;
  #startedAt = 0;
  #issued = 0;
  #inFlight = 0;
  #idle: (() => void) | null = null;
  #waiters: { count: number; resolve: () => void }[] = [];

  constructor(options: LoadOptions) {
    this.#options = options;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /** Starts sending at the configured rate (ticks every 10 ms). */
  start(): this {
    this.#startedAt = performance.now();
    // Unref'd: a test that fails before stop() must not be held open by its load (a request in
    // flight has its own handles and deadline).
    this.#timer = setInterval(() => this.#tick(), 10).unref();
    return this;
  }

  /** Stops sending; resolves once every request sent has settled. */
  async stop(timeoutMs = READY_MS): Promise<LoadResult[]> {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    if (this.#inFlight > 0) {
      await within(new Promise<void>((resolve) => (this.#idle = resolve)), timeoutMs, 'load to settle');
    }
    return this.results;
  }

  /** Resolves once `count` requests have settled. */
  whenSettled(count: number, timeoutMs = READY_MS): Promise<void> {
    if (this.results.length >= count) return Promise.resolve();
    return within(
      new Promise<void>((resolve) => this.#waiters.push({ count, resolve })),
      timeoutMs,
      `${count} load requests to settle`,
    );
  }

  #tick(): void {
    const due = Math.floor(((performance.now() - this.#startedAt) / 1000) * this.#options.rate);
    const max = this.#options.maxInFlight ?? 256;
    for (; this.#issued < due; this.#issued++) {
      if (this.#inFlight >= max) this.skipped++;
      else this.#send(`${this.#options.prefix ?? 'load'}-${this.#issued}`);
    }
  }

  #send(id: string): void {
    const o = this.#options;
    const result: LoadResult = { id, sentAt: performance.now(), doneAt: 0, status: 0, written: false };
    this.#inFlight++;
    this.peakInFlight = Math.max(this.peakInFlight, this.#inFlight);
    let settled = false;
    const settle = (error?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      result.doneAt = performance.now();
      if (error !== undefined) result.error = error;
      this.results.push(result);
      this.#inFlight--;
      this.#waiters = this.#waiters.filter((w) => {
        if (this.results.length < w.count) return true;
        w.resolve();
        return false;
      });
      if (this.#inFlight === 0 && this.#timer === null) this.#idle?.();
    };
    const req = request({
      host: '127.0.0.1',
      port: o.port,
      path: o.path,
      headers: { host: o.host, 'x-request-id': id },
      agent: o.agent ?? false,
    });
    const timer = setTimeout(
      () => {
        req.destroy();
        settle('timeout');
      },
      scaled(o.timeoutMs ?? EVENT_MS),
    );
    req.on('finish', () => (result.written = true));
    req.on('error', (err: NodeJS.ErrnoException) => settle(err.code ?? err.message));
    req.on('response', (res) => {
      result.status = res.statusCode ?? 0;
      res.on('data', () => {});
      res.on('end', () => settle());
      res.on('aborted', () => settle('aborted'));
      res.on('error', (err: NodeJS.ErrnoException) => settle(err.code ?? err.message));
    });
    req.end();
  }
}

/** Results grouped by outcome: `200`, `503`, `ECONNRESET`, ... */
export function tally(results: readonly LoadResult[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const r of results) {
    const key = r.error ?? String(r.status);
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
}
