// The admin REST API (DESIGN §3): clusters, tokens, routes, live tunnels and recent traffic, JSON in and
// out, behind the bearer admin token. Errors are `{error: {code, message, field?}}`; invalid input is 400
// naming the field at fault. Every change goes through the ControlPlane and is awaited, so it takes
// effect on the next request.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ConfigError } from '../errors.js';
import { sendJson } from '../ops.js';
import { StoreConflict, StoreUnavailable } from '../store/store.js';
import { CLUSTER_NAME_RULE, isClusterName } from '../syntax.js';
import { adminTokenMatches, type ControlPlane } from './control.js';
import { OPENAPI } from './openapi.js';
import { validateRoute } from './routes.js';
import { validateTcpRoute } from './tcp-config.js';
import type { ConnectionTotals } from './tcp-connections.js';
import { TcpRouteError, type TcpRoutes } from './tcp-listener.js';
import type { TlsPassthrough } from './tls-passthrough.js';
import type { TcpRouteTraffic, Traffic } from './traffic.js';
import type { Route } from '../store/model.js';
import type { TunnelRegistry } from './tunnels.js';

/** Largest JSON body accepted. */
export const MAX_BODY_BYTES = 64 * 1024;
/**
 * Most bytes of a body that the API does not use (a refused call's, or past MAX_BODY_BYTES) that are
 * read and thrown away to keep the connection; a longer body is answered with `Connection: close`.
 */
export const MAX_DRAIN_BYTES = 1024 * 1024;

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
  /** The admin token's `sha256:` digest (loadAdminToken). */
  adminToken: string,
  traffic: Traffic,
  /** A fleet member's view of the fleet (docs/fleet.md); absent for a lone controller. */
  fleet?: () => unknown[],
  /** The controller's TCP routes; absent, the /api/tcp-routes calls answer 404. */
  tcpRoutes?: TcpRoutes,
  /** The TLS listener's passthrough, whose hosts /api/traffic shows with the TCP routes. */
  passthrough?: TlsPassthrough,
): AdminApi {
  const routes: Handler[] = [
    ['GET', /^\/api\/clusters$/, async () => ({ clusters: await control.store.listClusters() })],
    ['POST', /^\/api\/clusters$/, (_m, body) => addCluster(control, body)],
    ['DELETE', /^\/api\/clusters\/([^/]+)$/, ([name]) => removeCluster(control, name!)],
    ['GET', /^\/api\/clusters\/([^/]+)\/tokens$/, ([name]) => listTokens(control, name!)],
    ['POST', /^\/api\/clusters\/([^/]+)\/tokens$/, ([name]) => createToken(control, name!)],
    ['DELETE', /^\/api\/tokens\/([^/]+)$/, ([id]) => revokeToken(control, id!)],
    ['GET', /^\/api\/routes$/, async () => ({ routes: await control.store.listRoutes() })],
    ['POST', /^\/api\/routes$/, (_m, body) => addRoute(control, body)],
    ['DELETE', /^\/api\/routes$/, (_m, body, query) => removeRoute(control, body, query)],
    ['GET', /^\/api\/tcp-routes$/, () => ({ tcpRoutes: listTcpRoutes(tcpRoutes) })],
    ['POST', /^\/api\/tcp-routes$/, (_m, body) => addTcpRoute(control, tcpRoutes, body)],
    ['DELETE', /^\/api\/tcp-routes\/([^/]+)$/, ([listen]) => removeTcpRoute(tcpRoutes, listen!)],
    ['GET', /^\/api\/tunnels$/, () => ({ tunnels: listTunnels(registry) })],
    [
      'GET',
      /^\/api\/traffic$/,
      async () => trafficOf(traffic, await control.store.listRoutes(), tcpRoutes, passthrough),
    ],
    ['GET', /^\/api\/fleet$/, () => ({ fleet: fleet !== undefined, instances: fleet?.() ?? [] })],
  ];
  return {
    handle(req, res, path) {
      if (path !== '/api' && !path.startsWith('/api/')) return false;
      if (path === '/api/openapi.json' && req.method === 'GET') {
        sendJson(res, 200, OPENAPI);
        return true;
      }
      // serve() answers every error itself; this is for a bug in that, which must not end the process.
      serve(req, res, path, routes, adminToken).catch(() => res.destroy());
      return true;
    },
  };
}

type Handler = [
  method: string,
  pattern: RegExp,
  run: (params: string[], body: unknown, query: URLSearchParams) => unknown,
];

/**
 * Answers one API call. Every path ends in one JSON answer, and the connection is kept whenever it can
 * be: a body the call did not read (refused before it, or past the limit) is read to its end and
 * thrown away first, up to MAX_DRAIN_BYTES, so that the next request on the connection starts where
 * it should. A body longer than that gets `Connection: close` instead; node closes after the answer.
 */
async function serve(
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  handlers: readonly Handler[],
  adminToken: string,
): Promise<void> {
  let status: number;
  let body: unknown;
  try {
    const call = route(req, res, path, handlers, adminToken);
    const input = req.method === 'POST' || req.method === 'DELETE' ? await readJson(req) : undefined;
    body = await call.run(input);
    status = req.method === 'POST' ? 201 : 200;
  } catch (err) {
    const e = asApiError(err);
    status = e.status;
    body = {
      error: { code: e.code, message: e.message, ...(e.field === undefined ? {} : { field: e.field }) },
    };
    if (e.status === 401) res.setHeader('WWW-Authenticate', 'Bearer realm="sluice"');
  }
  if (!req.complete && !(await discardBody(req))) res.shouldKeepAlive = false;
  if (body === NO_CONTENT) {
    res.writeHead(204).end();
    return;
  }
  sendJson(res, status, body);
}

/** The handler for a call, once the caller is authorized; throws the ApiError to answer otherwise. */
function route(
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  handlers: readonly Handler[],
  adminToken: string,
): { run: (body: unknown) => unknown } {
  authorize(req, adminToken);
  const matches = handlers.filter(([, pattern]) => pattern.test(path));
  if (matches.length === 0) throw new ApiError(404, 'not_found', `no such API path: ${path}`);
  const handler = matches.find(([method]) => method === req.method);
  if (handler === undefined) {
    res.setHeader('Allow', matches.map(([m]) => m).join(', '));
    throw new ApiError(405, 'method_not_allowed', `${req.method} is not allowed on ${path}`);
  }
  const params = handler[1].exec(path)!.slice(1).map(decodeParam);
  const query = new URL(req.url ?? '/', 'http://admin').searchParams;
  return { run: (body) => handler[2](params, body, query) };
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
  // The store (Redis) is away: nothing was changed, and the same call works once it is back.
  if (err instanceof StoreUnavailable) return new ApiError(503, 'store_unavailable', err.message);
  if (err instanceof TcpRouteError) {
    if (err.reason === 'not_found') return new ApiError(404, 'not_found', err.message);
    if (err.reason === 'listen_failed') return new ApiError(400, 'listen_failed', err.message, 'listen');
    // address_in_use and duplicate: the address is taken, by another program or another route.
    return new ApiError(409, err.reason, err.message, 'listen');
  }
  if (err instanceof ConfigError) {
    // validateRoute's keys are `route.<field>`; the message after the key is the rule. Any other key
    // is not an input field, so none is named.
    const field = /^(?:route|tcpRoute)\.(.+)$/s.exec(err.key)?.[1];
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
  const body = await readBody(req);
  if (body.length === 0) return undefined;
  try {
    return JSON.parse(body.toString('utf8')) as unknown;
  } catch {
    throw new ApiError(400, 'invalid_json', 'the body is not valid JSON');
  }
}

const tooLarge = (): ApiError =>
  new ApiError(413, 'payload_too_large', `the body exceeds ${MAX_BODY_BYTES} bytes`);

/**
 * The whole body, at most MAX_BODY_BYTES. Read with listeners rather than an async iterator: leaving an
 * iterator early destroys the request and its socket, and the connection must outlive a refused body.
 * Past the limit, reading stops where it is; `discardBody` goes on from there.
 */
function readBody(req: IncomingMessage): Promise<Buffer> {
  if (Number(req.headers['content-length']) > MAX_BODY_BYTES) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const stop = (): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('close', onClose);
      req.pause();
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) return void chunks.push(chunk);
      stop();
      reject(tooLarge());
    };
    const onEnd = (): void => {
      stop();
      resolve(Buffer.concat(chunks));
    };
    // The client left mid-body: nobody will read the answer, but one is still made, and nothing throws.
    const onClose = (): void => {
      stop();
      reject(new ApiError(400, 'invalid_input', 'the body ended before its declared end'));
    };
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('close', onClose);
    req.resume();
  });
}

/**
 * Reads the rest of a body that will not be used and throws it away. True when it ended within
 * MAX_DRAIN_BYTES, so the connection can carry the next request; false when it is longer, or the client
 * left. A declared length past the bound is not read at all. The admin listener's request timeout
 * bounds how long a slow body can take.
 */
function discardBody(req: IncomingMessage): Promise<boolean> {
  if (Number(req.headers['content-length']) > MAX_DRAIN_BYTES) return Promise.resolve(false);
  if (req.destroyed) return Promise.resolve(false);
  return new Promise((resolve) => {
    let size = 0;
    const done = (kept: boolean): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('close', onClose);
      if (!kept) req.pause();
      resolve(kept);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > MAX_DRAIN_BYTES) done(false);
    };
    const onEnd = (): void => done(true);
    const onClose = (): void => done(req.complete);
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('close', onClose);
    req.resume();
  });
}

function object(body: unknown): Record<string, unknown> {
  if (typeof body === 'object' && body !== null && !Array.isArray(body))
    return body as Record<string, unknown>;
  throw new ApiError(400, 'invalid_input', 'the body must be a JSON object');
}

function clusterName(value: unknown, field: string): string {
  if (isClusterName(value)) return value;
  throw new ApiError(400, 'invalid_input', `must be a cluster name: ${CLUSTER_NAME_RULE}`, field);
}

async function existingCluster(control: ControlPlane, name: string): Promise<string> {
  if ((await control.store.getCluster(name)) === undefined) {
    throw new ApiError(404, 'not_found', `no cluster named ${JSON.stringify(name)}`);
  }
  return name;
}

async function addCluster(control: ControlPlane, body: unknown): Promise<unknown> {
  const input = object(body);
  const unknown = Object.keys(input).find((k) => k !== 'name');
  if (unknown !== undefined)
    throw new ApiError(400, 'invalid_input', 'is not a cluster field (expected name)', unknown);
  return { cluster: await control.addCluster(clusterName(input.name, 'name')) };
}

async function removeCluster(control: ControlPlane, name: string): Promise<unknown> {
  if (!(await control.removeCluster(name)))
    throw new ApiError(404, 'not_found', `no cluster named ${JSON.stringify(name)}`);
  return { deleted: name };
}

async function listTokens(control: ControlPlane, cluster: string): Promise<unknown> {
  const tokens = await control.store.listTokens(await existingCluster(control, cluster));
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

async function createToken(control: ControlPlane, cluster: string): Promise<unknown> {
  const { token, record } = await control.createToken(await existingCluster(control, cluster));
  return { id: record.id, cluster: record.cluster, created: record.created, token };
}

async function revokeToken(control: ControlPlane, id: string): Promise<unknown> {
  const record = await control.revokeToken(id);
  if (record === undefined) throw new ApiError(404, 'not_found', `no token with id ${JSON.stringify(id)}`);
  return { id: record.id, cluster: record.cluster, revoked: record.revoked };
}

async function addRoute(control: ControlPlane, body: unknown): Promise<unknown> {
  const route = validateRoute(object(body), 'route');
  await existingClusterField(control, route.cluster);
  await control.addRoute(route);
  return { route };
}

async function existingClusterField(control: ControlPlane, name: string): Promise<void> {
  if ((await control.store.getCluster(name)) === undefined) {
    throw new ApiError(400, 'invalid_input', `names no cluster: ${JSON.stringify(name)}`, 'cluster');
  }
}

/** The route to delete is named by `host` and `path` (default `/`), in the query or a JSON body. */
async function removeRoute(control: ControlPlane, body: unknown, query: URLSearchParams): Promise<unknown> {
  const input = body === undefined ? Object.fromEntries(query) : object(body);
  if (typeof input.host !== 'string' || input.host === '') {
    throw new ApiError(400, 'invalid_input', 'must name the route host', 'host');
  }
  // Normalized as a route is, so that `App.Example.Test` and `/api/` find what was stored.
  const route = validateRoute(
    { host: input.host, path: input.path ?? '/', cluster: 'x', target: 'http://x:1' },
    'route',
  );
  if (!(await control.removeRoute(route.host, route.path ?? '/'))) {
    throw new ApiError(404, 'not_found', `no route for host ${route.host}, path ${route.path ?? '/'}`);
  }
  return { deleted: { host: route.host, path: route.path } };
}

function tcpRoutesOf(tcpRoutes: TcpRoutes | undefined): TcpRoutes {
  if (tcpRoutes === undefined) throw new ApiError(404, 'not_found', 'this controller has no TCP routes');
  return tcpRoutes;
}

/** /api/traffic: the HTTP routes' rates, and the counts of every TCP route and passthrough host. */
function trafficOf(
  traffic: Traffic,
  routes: Route[],
  tcpRoutes: TcpRoutes | undefined,
  passthrough: TlsPassthrough | undefined,
): unknown {
  const tcp: TcpRouteTraffic[] = (tcpRoutes?.totals() ?? []).map(({ route, address, totals }) => ({
    kind: 'tcp',
    route: address,
    cluster: route.cluster,
    target: route.target,
    ...totals,
  }));
  const byHost = passthrough?.totals();
  for (const r of routes) {
    if (r.tls !== 'passthrough') continue;
    const totals = byHost?.get(r.host) ?? NO_CONNECTIONS;
    tcp.push({ kind: 'tls-passthrough', route: r.host, cluster: r.cluster, target: r.target, ...totals });
  }
  return traffic.snapshot(routes, tcp);
}

const NO_CONNECTIONS: Readonly<ConnectionTotals> = Object.freeze({
  open: 0,
  connections: 0,
  refused: 0,
  bytesIn: 0,
  bytesOut: 0,
});

function listTcpRoutes(tcpRoutes: TcpRoutes | undefined): unknown[] {
  return tcpRoutesOf(tcpRoutes)
    .list()
    .map(({ route, address, openConnections }) => ({ ...route, address, openConnections }));
}

/**
 * Binds a TCP route at once. It lives until the controller stops: runtime TCP routes are not kept in
 * the store (docs/tcp.md), so the configured tcpRoutes are what a restart brings back.
 */
async function addTcpRoute(
  control: ControlPlane,
  tcpRoutes: TcpRoutes | undefined,
  body: unknown,
): Promise<unknown> {
  const routes = tcpRoutesOf(tcpRoutes);
  const route = validateTcpRoute(object(body), 'tcpRoute');
  await existingCluster(control, route.cluster);
  const listener = await routes.add(route);
  return { tcpRoute: { ...route, address: listener.address } };
}

/**
 * Stops accepting at once and answers 204 then; open connections go on for the grace period in the
 * background (TcpRoutes.remove), so the caller does not wait out tunnel.gracePeriod.
 */
function removeTcpRoute(tcpRoutes: TcpRoutes | undefined, listen: string): NoContent {
  const routes = tcpRoutesOf(tcpRoutes);
  if (routes.get(listen) === undefined) {
    throw new ApiError(404, 'not_found', `no tcp route listens on ${listen}`);
  }
  // remove() closes the listening socket before its first await; the rest is the drain.
  routes.remove(listen).catch(() => undefined);
  return NO_CONTENT;
}

/** A handler's answer that has no body: 204. */
const NO_CONTENT = Symbol('no content');
type NoContent = typeof NO_CONTENT;

function listTunnels(registry: TunnelRegistry): unknown[] {
  return registry.all().map((t) => {
    const stats = t.session.stats();
    return {
      cluster: t.cluster,
      agent: t.agent,
      replica: t.replica,
      version: t.version ?? null,
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
