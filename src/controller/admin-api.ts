// The admin REST API (DESIGN §3): clusters, tokens, routes, live tunnels and recent traffic, JSON in and
// out, behind the bearer admin token. Errors are `{error: {code, message, field?}}`; invalid input is 400
// naming the field at fault. Every change goes through the ControlPlane, so it takes effect on the next
// request.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ConfigError } from '../errors.js';
import { StoreConflict } from '../store/store.js';
import { adminTokenMatches, type ControlPlane } from './control.js';
import { OPENAPI } from './openapi.js';
import { validateRoute } from './routes.js';
import type { Traffic } from './traffic.js';
import type { TunnelRegistry } from './tunnels.js';

/** Largest JSON body accepted. */
export const MAX_BODY_BYTES = 64 * 1024;

const CLUSTER_NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** An API error: the HTTP status, a stable code, a message and maybe the input field at fault. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

export interface AdminApi {
  /** Serves `req` when its path is under /api/; false otherwise. */
  handle(req: IncomingMessage, res: ServerResponse, path: string): boolean;
}

export function createAdminApi(
  control: ControlPlane,
  registry: TunnelRegistry,
  adminToken: string,
  traffic: Traffic,
): AdminApi {
  const routes: Handler[] = [
    ['GET', /^\/api\/clusters$/, () => ({ clusters: control.store.listClusters() })],
    ['POST', /^\/api\/clusters$/, (_m, body) => addCluster(control, body)],
    ['DELETE', /^\/api\/clusters\/([^/]+)$/, ([name]) => removeCluster(control, name!)],
    ['GET', /^\/api\/clusters\/([^/]+)\/tokens$/, ([name]) => listTokens(control, name!)],
    ['POST', /^\/api\/clusters\/([^/]+)\/tokens$/, ([name]) => createToken(control, name!)],
    ['DELETE', /^\/api\/tokens\/([^/]+)$/, ([id]) => revokeToken(control, id!)],
    ['GET', /^\/api\/routes$/, () => ({ routes: control.store.listRoutes() })],
    ['POST', /^\/api\/routes$/, (_m, body) => addRoute(control, body)],
    ['DELETE', /^\/api\/routes$/, (_m, body, query) => removeRoute(control, body, query)],
    ['GET', /^\/api\/tunnels$/, () => ({ tunnels: listTunnels(registry) })],
    ['GET', /^\/api\/traffic$/, () => traffic.snapshot(control.store.listRoutes())],
  ];
  return {
    handle(req, res, path) {
      if (path !== '/api' && !path.startsWith('/api/')) return false;
      if (path === '/api/openapi.json' && req.method === 'GET') {
        sendJson(res, 200, OPENAPI);
        return true;
      }
      void serve(req, res, path, routes, adminToken);
      return true;
    },
  };
}

type Handler = [
  method: string,
  pattern: RegExp,
  run: (params: string[], body: unknown, query: URLSearchParams) => unknown,
];

async function serve(
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  handlers: readonly Handler[],
  adminToken: string,
): Promise<void> {
  try {
    authorize(req, adminToken);
    const matches = handlers.filter(([, pattern]) => pattern.test(path));
    if (matches.length === 0) throw new ApiError(404, 'not_found', `no such API path: ${path}`);
    const handler = matches.find(([method]) => method === req.method);
    if (handler === undefined) {
      res.setHeader('Allow', matches.map(([m]) => m).join(', '));
      throw new ApiError(405, 'method_not_allowed', `${req.method} is not allowed on ${path}`);
    }
    const params = handler[1].exec(path)!.slice(1).map(decodeParam);
    const body = req.method === 'POST' || req.method === 'DELETE' ? await readJson(req) : undefined;
    const query = new URL(req.url ?? '/', 'http://admin').searchParams;
    const result = handler[2](params, body, query);
    sendJson(res, req.method === 'POST' ? 201 : 200, result);
  } catch (err) {
    const e = asApiError(err);
    const error = { code: e.code, message: e.message, ...(e.field === undefined ? {} : { field: e.field }) };
    if (e.status === 401) res.setHeader('WWW-Authenticate', 'Bearer realm="sluice"');
    sendJson(res, e.status, { error });
    // The rest of a refused body is not read: close rather than keep a connection with bytes pending.
    if (!req.complete) res.once('finish', () => req.socket.destroy());
  }
}

function authorize(req: IncomingMessage, adminToken: string): void {
  const header = req.headers.authorization ?? '';
  const match = /^Bearer ([^\s]+)$/i.exec(header);
  if (match === null) throw new ApiError(401, 'unauthorized', 'an admin bearer token is required');
  if (!adminTokenMatches(match[1]!, adminToken)) throw new ApiError(401, 'unauthorized', 'wrong admin token');
}

function asApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof StoreConflict) return new ApiError(409, 'conflict', err.message, err.field);
  if (err instanceof ConfigError) {
    // validateRoute's keys are `route.<field>`; the message after the key is the rule.
    const field = err.key.replace(/^route\.?/, '') || undefined;
    return new ApiError(400, 'invalid_input', err.message.slice(err.key.length + 1), field);
  }
  return new ApiError(500, 'internal', err instanceof Error ? err.message : String(err));
}

function decodeParam(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    throw new ApiError(400, 'invalid_input', 'the path is not valid percent-encoding');
  }
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      throw new ApiError(413, 'payload_too_large', `the body exceeds ${MAX_BODY_BYTES} bytes`);
    }
    chunks.push(chunk);
  }
  if (size === 0) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    throw new ApiError(400, 'invalid_json', 'the body is not valid JSON');
  }
}

function object(body: unknown): Record<string, unknown> {
  if (typeof body === 'object' && body !== null && !Array.isArray(body))
    return body as Record<string, unknown>;
  throw new ApiError(400, 'invalid_input', 'the body must be a JSON object');
}

function clusterName(value: unknown, field: string): string {
  if (typeof value === 'string' && CLUSTER_NAME.test(value)) return value;
  throw new ApiError(
    400,
    'invalid_input',
    'must be a cluster name: 1 to 63 lowercase letters, digits and hyphens, with no hyphen at either end',
    field,
  );
}

function existingCluster(control: ControlPlane, name: string): string {
  if (control.store.getCluster(name) === undefined) {
    throw new ApiError(404, 'not_found', `no cluster named ${JSON.stringify(name)}`);
  }
  return name;
}

function addCluster(control: ControlPlane, body: unknown): unknown {
  const input = object(body);
  const unknown = Object.keys(input).find((k) => k !== 'name');
  if (unknown !== undefined)
    throw new ApiError(400, 'invalid_input', 'is not a cluster field (expected name)', unknown);
  return { cluster: control.store.addCluster(clusterName(input.name, 'name')) };
}

function removeCluster(control: ControlPlane, name: string): unknown {
  if (!control.removeCluster(name))
    throw new ApiError(404, 'not_found', `no cluster named ${JSON.stringify(name)}`);
  return { deleted: name };
}

function listTokens(control: ControlPlane, cluster: string): unknown {
  const tokens = control.store.listTokens(existingCluster(control, cluster));
  // Never the hash: a digest of a short dev token could be brute-forced offline.
  return {
    tokens: tokens.map(({ id, cluster: c, created, revoked, source }) => ({
      id,
      cluster: c,
      created,
      revoked,
      source,
    })),
  };
}

function createToken(control: ControlPlane, cluster: string): unknown {
  const { token, record } = control.createToken(existingCluster(control, cluster));
  return { id: record.id, cluster: record.cluster, created: record.created, token };
}

function revokeToken(control: ControlPlane, id: string): unknown {
  const record = control.revokeToken(id);
  if (record === undefined) throw new ApiError(404, 'not_found', `no token with id ${JSON.stringify(id)}`);
  return { id: record.id, cluster: record.cluster, revoked: record.revoked };
}

function addRoute(control: ControlPlane, body: unknown): unknown {
  const route = validateRoute(object(body), 'route');
  existingClusterField(control, route.cluster);
  control.addRoute(route);
  return { route };
}

function existingClusterField(control: ControlPlane, name: string): void {
  if (control.store.getCluster(name) === undefined) {
    throw new ApiError(400, 'invalid_input', `names no cluster: ${JSON.stringify(name)}`, 'cluster');
  }
}

/** The route to delete is named by `host` and `path` (default `/`), in the query or a JSON body. */
function removeRoute(control: ControlPlane, body: unknown, query: URLSearchParams): unknown {
  const input = body === undefined ? Object.fromEntries(query) : object(body);
  if (typeof input.host !== 'string' || input.host === '') {
    throw new ApiError(400, 'invalid_input', 'must name the route host', 'host');
  }
  // Normalized as a route is, so that `App.Example.Test` and `/api/` find what was stored.
  const route = validateRoute(
    { host: input.host, path: input.path ?? '/', cluster: 'x', target: 'http://x:1' },
    'route',
  );
  if (!control.removeRoute(route.host, route.path ?? '/')) {
    throw new ApiError(404, 'not_found', `no route for host ${route.host}, path ${route.path ?? '/'}`);
  }
  return { deleted: { host: route.host, path: route.path } };
}

function listTunnels(registry: TunnelRegistry): unknown[] {
  return registry.all().map((t) => {
    const stats = t.session.stats();
    return {
      cluster: t.cluster,
      agent: t.agent,
      replica: t.replica,
      remote: t.remote ?? null,
      since: new Date(t.since).toISOString(),
      rttMs: stats.rttMs,
      streams: stats.streams,
      bytesIn: stats.bytesIn,
      bytesOut: stats.bytesOut,
      draining: t.session.draining,
    };
  });
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  // nosniff: the bodies carry hosts and paths that clients chose; never let a browser read them as HTML.
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
  });
  res.end(JSON.stringify(body));
}
