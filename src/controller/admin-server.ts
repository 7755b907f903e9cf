// The admin listener's HTTP server: the admin API and dashboard behind the admin token, and beside them,
// without it, the probes (/healthz, /readyz), /metrics for Prometheus and /debug/memory for leak checks.
// The admin listener is a private port.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { memoryReport } from '../diagnostics.js';
import { sendMetrics } from '../metrics.js';
import { type AdminApi, sendJson } from './admin-api.js';
import { serveDashboard } from './dashboard.js';
import type { HttpListener } from './http-listener.js';
import type { ControllerMetrics } from './metrics.js';
import type { TunnelRegistry } from './tunnels.js';

/** What /debug/memory reports of the public side. */
export interface PublicSide {
  /** The requests in flight (the PublicEdge). */
  readonly edge: { readonly inFlight: number };
  readonly http: HttpListener;
}

/** What the probes read of the running controller. */
export interface AdminHooks {
  /** Whether to answer /readyz with 200, and why not (or what is degraded). */
  ready(): { ready: boolean; reasons: string[] };
}

export function createAdminServer(
  registry: TunnelRegistry,
  front: PublicSide,
  api: AdminApi,
  metrics: ControllerMetrics,
  hooks: AdminHooks = { ready: () => ({ ready: true, reasons: [] }) },
): Server {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '').split('?', 1)[0]!;
    if (api.handle(req, res, path)) return;
    if (serveDashboard(req, res, path)) return;
    if (path === '/healthz') {
      sendJson(res, 200, { ok: true, tunnels: registry.all().length });
      return;
    }
    if (path === '/readyz') {
      const { ready, reasons } = hooks.ready();
      const body = { ok: ready, tunnels: registry.all().length };
      sendJson(res, ready ? 200 : 503, reasons.length === 0 ? body : { ...body, reasons });
      return;
    }
    // Without the admin token, like the probes: the admin listener is a private port Prometheus scrapes.
    if (path === '/metrics') {
      sendMetrics(metrics.registry, res);
      return;
    }
    if (path === '/debug/memory') {
      // For leak checks: with --expose-gc the heap figure is taken after a full collection.
      void Promise.all([memoryReport(server), front.http.connectionCount()]).then(
        ([report, publicConnections]) => {
          const tunnels = registry.all();
          sendJson(res, 200, {
            ...report,
            registry: registry.size(),
            streams: tunnels.reduce((n, t) => n + t.session.streamCount, 0),
            inFlight: front.edge.inFlight,
            publicConnections,
            ...front.http.counts,
          });
        },
        (err: Error) => sendJson(res, 500, { error: err.message }),
      );
      return;
    }
    sendJson(res, 404, { error: 'not found' });
  });
  return server;
}
