// What the controller's and the agent's metrics share: a Prometheus registry for each controller or
// agent (so several in one test process never mix their series) with the Node process metrics, status
// classes as label values, and the `/metrics` answer. Counters on the data path are plain numbers that
// become Prometheus series when a scrape asks (`collect()`), as do gauges read off live state.
import type { ServerResponse } from 'node:http';
import { collectDefaultMetrics, Registry } from 'prom-client';

/**
 * How often the event-loop delay is sampled, in ms. prom-client's 10 ms default wakes an idle process
 * 100 times a second, which measured 0.7% of a core on an otherwise idle agent; at 100 ms it is 0.1%,
 * and a blocked loop still shows, as the delay of the sample that waited.
 */
const EVENT_LOOP_SAMPLE_MS = 100;

/** A registry with the process metrics (CPU, memory, heap, handles, event-loop delay, GC). */
export function createMetricsRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  return registry;
}

/** Label values for an HTTP status, by `statusClass()`: no status at all, the five classes, and the rest. */
export const STATUS_CLASSES = ['none', '1xx', '2xx', '3xx', '4xx', '5xx', 'other'] as const;

/** The index into STATUS_CLASSES for `status`; 0 (none) means no status was sent. */
export function statusClass(status: number): number {
  if (status === 0) return 0;
  const hundreds = Math.floor(status / 100);
  return hundreds >= 1 && hundreds <= 5 ? hundreds : 6;
}

/** Answers a scrape: the Prometheus text format, never cached. */
export function sendMetrics(registry: Registry, res: ServerResponse): void {
  registry.metrics().then(
    (text) => {
      res.writeHead(200, { 'Content-Type': registry.contentType, 'Cache-Control': 'no-store' });
      res.end(text);
    },
    (err: Error) => {
      res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end(`metrics failed: ${err.message}\n`);
    },
  );
}
