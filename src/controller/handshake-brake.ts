// The brake on failed tunnel handshakes, per client address (docs/protocol.md §4). Each address has a
// token bucket of failures: BURST may come at once, then one more per REFILL_MS. A handshake of an
// address with an empty bucket is held before its token is even checked, until the bucket would have
// refilled; one that would wait longer than MAX_HOLD_MS is refused with OVERLOAD unchecked. So a client
// guessing tokens gets about one check a second, whether or not it waits for the answers.
//
// A check that succeeds gives its bucket token back: a correct token is never what empties a bucket,
// so agents behind one address (a NAT, a node) dial as often as they like while none of them fails. An
// agent that shares an address with a client failing faster than the refill is held for up to
// MAX_HOLD_MS, or refused with OVERLOAD, which it retries with its ordinary backoff (not the long wait
// after UNAUTHORIZED); within MAX_HOLD_MS + REFILL_MS of the failures stopping, it gets in at once.
//
// The log is sampled the same way: per address, the first LOG_FIRST failures of an interval are logged
// one by one, the rest are counted and reported in one line when the interval ends. Memory is bounded:
// at most MAX_ADDRESSES entries, the least recently seen going first, and idle ones are dropped.
import { isIPv6 } from 'node:net';

export const HANDSHAKE_BRAKE = {
  /** Failed handshakes an address may have in a row before the next ones are held. */
  burst: 10,
  /** One more failure is allowed per this many milliseconds. */
  refillMs: 1000,
  /** The longest a handshake is held; one that would wait longer is refused with OVERLOAD. */
  maxHoldMs: 5000,
  /** Addresses tracked at once. */
  maxAddresses: 10_000,
  /** Failures of one address logged one by one per interval; the others are counted. */
  logFirst: 5,
  logIntervalMs: 60_000,
} as const;

export type BrakeSettings = { readonly [K in keyof typeof HANDSHAKE_BRAKE]: number };

/** How many failures of an address went unlogged in the interval that ended, and how many were shed. */
export interface BrakeReport {
  address: string;
  failures: number;
  shed: number;
  intervalMs: number;
}

interface Entry {
  /** Failures the address may still have at once; below zero, handshakes are held for that debt. */
  tokens: number;
  /** When `tokens` was last brought up to date. */
  at: number;
  /** Failures logged in the current interval, and the ones that were not. */
  logged: number;
  unlogged: number;
  shed: number;
}

export class HandshakeBrake {
  readonly #entries = new Map<string, Entry>();
  readonly #settings: BrakeSettings;
  readonly #now: () => number;
  readonly #report: (report: BrakeReport) => void;
  #timer: NodeJS.Timeout | null = null;

  constructor(
    report: (report: BrakeReport) => void,
    settings: BrakeSettings = HANDSHAKE_BRAKE,
    now: () => number = Date.now,
  ) {
    this.#report = report;
    this.#settings = settings;
    this.#now = now;
  }

  /** Entries held now (for tests of the bound). */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * Before checking a handshake's token: how many milliseconds to hold it first (0: check now), or
   * 'shed' when it would wait past MAX_HOLD_MS and is refused unchecked. Takes one token of the bucket;
   * `succeeded` gives it back.
   */
  admit(address: string): number | 'shed' {
    const entry = this.#entry(address);
    if (entry.tokens >= 1) {
      entry.tokens -= 1;
      return 0;
    }
    const wait = Math.ceil((1 - entry.tokens) * this.#settings.refillMs);
    if (wait > this.#settings.maxHoldMs) {
      entry.shed += 1;
      entry.unlogged += 1;
      this.#schedule();
      return 'shed';
    }
    entry.tokens -= 1;
    return wait;
  }

  /** The handshake admitted last for `address` presented a valid token: its bucket token comes back. */
  succeeded(address: string): void {
    const entry = this.#entries.get(keyOf(address));
    if (entry !== undefined) entry.tokens = Math.min(this.#settings.burst, entry.tokens + 1);
  }

  /**
   * Records a failed handshake. `admitted`: it went through `admit` (its token is spent already); a
   * handshake that failed before its token could be checked (a timeout, a malformed HELLO) costs one
   * now. True when this failure is to be logged on its own line; false when it is only counted.
   */
  failed(address: string, admitted: boolean): boolean {
    const entry = this.#entry(address);
    if (!admitted) entry.tokens -= 1;
    if (entry.logged < this.#settings.logFirst) {
      entry.logged += 1;
      this.#schedule();
      return true;
    }
    entry.unlogged += 1;
    this.#schedule();
    return false;
  }

  /** Stops the interval timer; the counts not yet reported are dropped. */
  close(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  #entry(address: string): Entry {
    const key = keyOf(address);
    const now = this.#now();
    let entry = this.#entries.get(key);
    if (entry === undefined) {
      while (this.#entries.size >= this.#settings.maxAddresses) {
        this.#entries.delete(this.#entries.keys().next().value!);
      }
      entry = { tokens: this.#settings.burst, at: now, logged: 0, unlogged: 0, shed: 0 };
    } else {
      const refill = (now - entry.at) / this.#settings.refillMs;
      entry.tokens = Math.min(this.#settings.burst, entry.tokens + refill);
      entry.at = now;
      // Seen last: it moves to the end of the eviction order.
      this.#entries.delete(key);
    }
    this.#entries.set(key, entry);
    return entry;
  }

  #schedule(): void {
    if (this.#timer !== null) return;
    this.#timer = setInterval(() => this.#flush(), this.#settings.logIntervalMs);
    this.#timer.unref();
  }

  /** Ends an interval: reports what went unlogged, and drops the entries that have nothing left. */
  #flush(): void {
    const now = this.#now();
    for (const [key, entry] of this.#entries) {
      if (entry.unlogged > 0) {
        this.#report({
          address: key,
          failures: entry.unlogged,
          shed: entry.shed,
          intervalMs: this.#settings.logIntervalMs,
        });
      }
      entry.logged = entry.unlogged = entry.shed = 0;
      const tokens = entry.tokens + (now - entry.at) / this.#settings.refillMs;
      if (tokens >= this.#settings.burst) this.#entries.delete(key);
    }
    if (this.#entries.size === 0) this.close();
  }
}

/**
 * The address a bucket belongs to: an IPv4-mapped IPv6 address is its IPv4 address, and an IPv6
 * address counts by its /64, which one host usually holds whole.
 */
export function keyOf(address: string): string {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  if (mapped !== null) return mapped[1]!;
  if (!isIPv6(address)) return address;
  const [head = '', tail] = address.split('::');
  const front = head === '' ? [] : head.split(':');
  const back = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros =
    tail === undefined ? [] : Array<string>(Math.max(0, 8 - front.length - back.length)).fill('0');
  const groups = [...front, ...zeros, ...back].slice(0, 4);
  return `${groups.map((g) => Number.parseInt(g, 16).toString(16)).join(':')}::/64`;
}
