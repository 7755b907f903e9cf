// The admin listener's HTTP server: the admin API and dashboard behind the admin token, and beside them,
// without it, the ops endpoints (ops.ts): the probes (/healthz, /readyz), /metrics for Prometheus and
// /debug/memory for leak checks. The admin listener is a private port.
import type { Server } from 'node:http';
import { createOpsServer, type Readiness } from '../ops.js';
import type { AdminApi } from './admin-api.js';
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

/**
 * `readiness` is what /readyz answers: 503 with reasons while draining, 200 with reasons while
 * degraded (a store outage); without it the controller is ready whenever it answers.
 */
export function createAdminServer(
  registry: TunnelRegistry,
  front: PublicSide,
  api: AdminApi,
  metrics: ControllerMetrics,
  readiness?: () => Readiness,
): Server {
  return createOpsServer({
    routes: (req, res, path) => api.handle(req, res, path) || serveDashboard(req, res, path),
    status: () => ({ tunnels: registry.all().length }),
    ...(readiness === undefined ? {} : { readiness }),
    metrics: metrics.registry,
    memory: async () => {
      const publicConnections = await front.http.connectionCount();
      const tunnels = registry.all();
      return {
        registry: registry.size(),
        streams: tunnels.reduce((n, t) => n + t.session.streamCount, 0),
        inFlight: front.edge.inFlight,
        publicConnections,
        ...front.http.counts,
      };
    },
  });
}
