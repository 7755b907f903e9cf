// What a leak check needs to read from a running controller or agent (their `/debug/memory`): the heap
// after a full garbage collection, and the handles the event loop holds, by kind. The collection is only
// forced when node runs with --expose-gc (NODE_OPTIONS=--expose-gc), which nobody does by accident.
import type { Server } from 'node:net';

export interface MemoryReport {
  /** True when a full collection ran just before the figures were taken. */
  readonly gc: boolean;
  readonly heapUsed: number;
  readonly rss: number;
  /** Active handles and requests by kind (Timeout, TCPSocketWrap, ...). */
  readonly resources: Readonly<Record<string, number>>;
  /**
   * Connections open on the listener that serves the report, the asker's own among them: sockets
   * that are not the process's traffic, for a leak check to subtract from the TCPSocketWrap count.
   * How many of them a keep-alive client holds at a given moment is its business, not a leak.
   */
  readonly reportConnections: number;
}

export async function memoryReport(listener: Server): Promise<MemoryReport> {
  const reportConnections = await new Promise<number>((resolve, reject) =>
    listener.getConnections((err, n) => (err ? reject(err) : resolve(n))),
  );
  const gc = (globalThis as { gc?: () => void }).gc;
  // Twice: objects with finalizers (sockets, timers) are only reclaimed by the second pass.
  gc?.();
  gc?.();
  const { heapUsed, rss } = process.memoryUsage();
  const resources: Record<string, number> = {};
  for (const kind of process.getActiveResourcesInfo()) resources[kind] = (resources[kind] ?? 0) + 1;
  return { gc: gc !== undefined, heapUsed, rss, resources, reportConnections };
}
