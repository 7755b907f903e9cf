// Bounded waiting. Prefer events; this is for state that has no event of its own (a counter reaching
// a value). It re-checks on every turn of the event loop and gives up after `timeoutMs`.
export async function waitFor(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let turns = 0; turns < 10_000_000; turns++) {
    if (check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
  throw new Error(`gave up waiting for ${what}`);
}

/**
 * Resolves or rejects with `promise`, failing after `ms`. The timer is a real handle, so it also keeps
 * the event loop alive while the awaited thing has none (e.g. an in-memory transport).
 */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms}ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
