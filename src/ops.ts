// The ops endpoints that the controller's admin listener and the agent's health listener both serve:
// the probes (/healthz, /readyz), /metrics for Prometheus and /debug/memory for leak checks, answered
// the same way on both, with what differs passed in: the figures a probe reports, what readiness means,
// the registry, what a memory report adds, and routes tried first (the controller's admin API and
// dashboard). Also the listen and close helpers every HTTP listener here uses. None of these needs a
// token: the listener is a private port.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';
import { bindFailure } from './config/startup.js';
import { type HostPort, listenerUrl } from './config/values.js';
import { memoryReport } from './diagnostics.js';
import { sendMetrics } from './metrics.js';

/** Whether traffic should be sent here now, and if not, why not (one short sentence each). */
export interface Readiness {
  readonly ready: boolean;
  readonly reasons: readonly string[];
}

export const ALWAYS_READY: Readiness = Object.freeze({ ready: true, reasons: Object.freeze([]) });

export interface OpsOptions {
  /** Figures /healthz and /readyz report after `ok`, e.g. `{tunnels: 2}`. */
  status(): Readonly<Record<string, unknown>>;
  /**
   * What /readyz answers: 200 when ready; else 503, with the reasons in the body. Without it the
   * process is ready whenever it answers.
   */
  readiness?(): Readiness;
  readonly metrics: Registry;
  /** What /debug/memory adds to the process's memory report; a rejection answers 500. */
  memory(): Readonly<Record<string, unknown>> | Promise<Readonly<Record<string, unknown>>>;
  /** Tried first: answers the request and returns true, or returns false to leave it to the ops routes. */
  routes?(req: IncomingMessage, res: ServerResponse, path: string): boolean;
}

/** An HTTP server with the ops endpoints (and `routes`); anything else is a JSON 404. */
export function createOpsServer(options: OpsOptions): Server {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '').split('?', 1)[0]!;
    if (options.routes?.(req, res, path) === true) return;
    switch (path) {
      case '/healthz':
        sendJson(res, 200, { ok: true, ...options.status() });
        return;
      case '/readyz':
        sendReadiness(res, options.readiness?.() ?? ALWAYS_READY, options.status());
        return;
      case '/metrics':
        sendMetrics(options.metrics, res);
        return;
      case '/debug/memory':
        // For leak checks: with --expose-gc the heap figure is taken after a full collection.
        void Promise.all([memoryReport(server), options.memory()]).then(
          ([report, extra]) => sendJson(res, 200, { ...report, ...extra }),
          (err: Error) => sendJson(res, 500, { error: err.message }),
        );
        return;
      default:
        sendJson(res, 404, { error: 'not found' });
    }
  });
  return server;
}

// A ready answer carries `reasons` only when something is degraded (it still serves), so that a
// healthy one reads as /healthz does.
function sendReadiness(
  res: ServerResponse,
  readiness: Readiness,
  status: Readonly<Record<string, unknown>>,
): void {
  const body = { ok: readiness.ready, ...status };
  const reasons = readiness.reasons.length === 0 ? {} : { reasons: readiness.reasons };
  sendJson(res, readiness.ready ? 200 : 503, { ...body, ...reasons });
}

/** A JSON answer that no cache keeps and no browser sniffs for HTML (bodies carry client-chosen hosts). */
export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
  });
  res.end(JSON.stringify(body));
}

/**
 * Binds `server` at `at`; resolves with the URL actually bound (port 0 becomes the port chosen). A
 * failure the address causes is a ConfigError naming `key`, the setting to change.
 */
export function listenHttp(server: Server, at: HostPort, key: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const host = at.host.includes(':') ? `[${at.host}]` : at.host;
    const onError = (err: Error): void => reject(bindFailure(key, `${host}:${at.port}`, err));
    server.once('error', onError);
    server.listen(at.port, at.host, () => {
      server.off('error', onError);
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : at.port;
      resolve(listenerUrl(at.host, port));
    });
  });
}

/** Stops `server` and cuts every connection it still has; resolves once it is closed. */
export function closeHttp(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
