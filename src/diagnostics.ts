// What a leak check needs to read from a running controller or agent (their `/debug/memory`): the heap
// after a full garbage collection, and the handles the event loop holds, by kind. The collection is only
// forced when node runs with --expose-gc (NODE_OPTIONS=--expose-gc), which nobody does by accident.

export interface MemoryReport {
  /** True when a full collection ran just before the figures were taken. */
  readonly gc: boolean;
  readonly heapUsed: number;
  readonly rss: number;
  /** Active handles and requests by kind (Timeout, TCPSocketWrap, ...). */
  readonly resources: Readonly<Record<string, number>>;
}

export function memoryReport(): MemoryReport {
  const gc = (globalThis as { gc?: () => void }).gc;
  // Twice: objects with finalizers (sockets, timers) are only reclaimed by the second pass.
  gc?.();
  gc?.();
  const { heapUsed, rss } = process.memoryUsage();
  const resources: Record<string, number> = {};
  for (const kind of process.getActiveResourcesInfo()) resources[kind] = (resources[kind] ?? 0) + 1;
  return { gc: gc !== undefined, heapUsed, rss, resources };
}
