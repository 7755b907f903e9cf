// Bounded waiting, sized for a busy machine. CI runs the suite on two cores shared with other jobs,
// where a process can stall for seconds, so a bound on a wait is a generous limit for "it never came",
// not a claim about speed: a claim about speed is an assertion on a measured time, with its own
// message. SLUICE_TEST_TIMEOUT_SCALE (default 1) multiplies every bound, for slower machines still.
import { setTimeout as sleep } from 'node:timers/promises';

function timeoutScale(text: string | undefined): number {
  if (text === undefined || text === '') return 1;
  const scale = Number(text);
  if (!Number.isFinite(scale) || scale < 1 || scale > 100) {
    throw new Error(`SLUICE_TEST_TIMEOUT_SCALE must be a number from 1 to 100, got ${JSON.stringify(text)}`);
  }
  return scale;
}

export const TIMEOUT_SCALE = timeoutScale(process.env.SLUICE_TEST_TIMEOUT_SCALE);

/** `ms` times SLUICE_TEST_TIMEOUT_SCALE: every bound passes through here. */
export function scaled(ms: number): number {
  return Math.round(ms * TIMEOUT_SCALE);
}

/** The default bound for an event in the test's own process or one child's answer. */
export const EVENT_MS = 30_000;
/** The default bound for a child process to start and log that it is ready (or to stop). */
export const READY_MS = 60_000;

/**
 * Waits for state that has no event of its own (a counter reaching a value). It re-checks on the next
 * few turns of the event loop, then every few milliseconds, so that a wait never spins a core that the
 * processes it waits for need; it gives up after `timeoutMs` (scaled).
 */
export async function waitFor(what: string, check: () => boolean, timeoutMs = EVENT_MS): Promise<void> {
  const ms = scaled(timeoutMs);
  const deadline = Date.now() + ms;
  for (let turn = 0; turn < 10_000_000; turn++) {
    if (check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms}ms waiting for ${what}`);
    if (turn < 100) await new Promise((resolve) => setImmediate(resolve));
    else await sleep(turn < 1_000 ? 1 : 10);
  }
  throw new Error(`gave up waiting for ${what}`);
}

/**
 * Resolves or rejects with `promise`, failing after `ms` (scaled). The timer is a real handle, so it
 * also keeps the event loop alive while the awaited thing has none (e.g. an in-memory transport).
 */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  const limit = scaled(ms);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${limit}ms waiting for ${what}`)), limit);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
