// A fake Kubernetes API server for the agent's discovery tests: no kube-apiserver runs on the machines
// that test Sluice. It serves the requests that @kubernetes/client-node's informers make (read from its
// ListWatch and Watch, cache.js and watch.js): a list of Ingresses or Services, cluster-wide or in one
// namespace, answered with `metadata.resourceVersion`; then
// `GET <same path>?watch=true&resourceVersion=N`, a chunked stream of JSON lines (ADDED, MODIFIED,
// DELETED, BOOKMARK when `allowWatchBookmarks=true`) with every change after N. It also answers GET of
// one object and `PUT …/ingresses/NAME/status`, which it records.
//
// Like the real server it keeps a history of changes: a watch from a resourceVersion older than the
// history (after `expire`) gets 410 Gone, as an ERROR event on a 200 stream (what kube-apiserver does)
// or as an HTTP 410, and the client must list again. A test drives the cluster with create, update and
// remove, each bumping one resourceVersion shared by every kind as etcd's revision is, and can end every
// watch cleanly or abruptly (`breakWatches`) to see the client resume.
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';

export type Kind = 'ingresses' | 'services';

interface KindSpec {
  /** The path prefix of its API group and version. */
  readonly prefix: string;
  readonly apiVersion: string;
  readonly kind: string;
}

const KINDS: Readonly<Record<Kind, KindSpec>> = {
  ingresses: { prefix: '/apis/networking.k8s.io/v1', apiVersion: 'networking.k8s.io/v1', kind: 'Ingress' },
  services: { prefix: '/api/v1', apiVersion: 'v1', kind: 'Service' },
};

/** An object as the API serves it; tests build them as plain JSON. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace: string;
    resourceVersion?: string;
    uid?: string;
    creationTimestamp?: string;
    annotations?: Record<string, string>;
    [key: string]: unknown;
  };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
}

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly query: Readonly<Record<string, string>>;
}

export interface StatusWrite {
  /** `namespace/name` */
  readonly object: string;
  readonly status: unknown;
  /** The resourceVersion the write was made against. */
  readonly resourceVersion: string;
}

interface Change {
  readonly rv: number;
  readonly kind: Kind;
  readonly type: 'ADDED' | 'MODIFIED' | 'DELETED';
  readonly object: KubeObject;
}

interface Watcher {
  readonly kind: Kind;
  readonly namespace: string | undefined;
  readonly bookmarks: boolean;
  readonly res: ServerResponse;
}

/** How a watch from a compacted resourceVersion is told so. */
export type GoneAs = 'event' | 'status';

/** A bound on the request log, so that a long test cannot grow it without end. */
const MAX_RECORDED = 10_000;
const BODY_LIMIT = 1 << 20;
/** Creation times start here and step one second per resourceVersion, so that age order is stable. */
const EPOCH_MS = Date.UTC(2026, 0, 1);

export class FakeKube {
  readonly #server: Server;
  readonly #token: string;
  readonly #objects: Record<Kind, Map<string, KubeObject>> = { ingresses: new Map(), services: new Map() };
  /** Every change since the compaction point, oldest first. */
  #history: Change[] = [];
  #compactedRv = 0;
  #rv = 1;
  #uid = 0;
  #goneAs: GoneAs = 'event';
  readonly #watchers = new Set<Watcher>();
  /** Requests answered 500 before the server behaves again, per `failNext`. */
  #failures: { match: (r: RecordedRequest) => boolean; left: number }[] = [];
  readonly requests: RecordedRequest[] = [];
  readonly statusWrites: StatusWrite[] = [];
  url = '';

  private constructor(token: string) {
    this.#token = token;
    this.#server = createServer((req, res) => this.#serve(req, res));
  }

  /** A server on 127.0.0.1, port 0, that wants `Authorization: Bearer <token>`. */
  static async start(token = 'fake-kube-token'): Promise<FakeKube> {
    const fake = new FakeKube(token);
    fake.#server.listen(0, '127.0.0.1');
    await once(fake.#server, 'listening');
    fake.url = `http://127.0.0.1:${(fake.#server.address() as AddressInfo).port}`;
    return fake;
  }

  /** A KubeConfig pointing at this server, built in code (plain HTTP needs `skipTLSVerify` in client-node). */
  kubeConfig(): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'fake', server: this.url, skipTLSVerify: true }],
      users: [{ name: 'test', token: this.#token }],
      contexts: [{ name: 'fake', cluster: 'fake', user: 'test' }],
      currentContext: 'fake',
    });
    return kc;
  }

  /** The same, as the YAML a `--kubeconfig FILE` holds. */
  kubeConfigYaml(): string {
    return [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      `- name: fake\n  cluster:\n    server: ${this.url}\n    insecure-skip-tls-verify: true`,
      'users:',
      `- name: test\n  user:\n    token: ${this.#token}`,
      'contexts:',
      '- name: fake\n  context:\n    cluster: fake\n    user: test',
      'current-context: fake',
      '',
    ].join('\n');
  }

  /** The current resourceVersion (the last change's). */
  get resourceVersion(): number {
    return this.#rv;
  }

  /** Watches open now, of one kind or of all. */
  openWatches(kind?: Kind): number {
    return [...this.#watchers].filter((w) => kind === undefined || w.kind === kind).length;
  }

  /** The requests of one kind's list (not watch) so far. */
  lists(kind: Kind): RecordedRequest[] {
    return this.requests.filter((r) => r.path.endsWith(`/${kind}`) && r.query.watch !== 'true');
  }

  /** The requests of one kind's watch so far. */
  watches(kind: Kind): RecordedRequest[] {
    return this.requests.filter((r) => r.path.endsWith(`/${kind}`) && r.query.watch === 'true');
  }

  get(kind: Kind, namespace: string, name: string): KubeObject | undefined {
    const found = this.#objects[kind].get(`${namespace}/${name}`);
    return found === undefined ? undefined : clone(found);
  }

  /** Adds an object: it gets a uid, a creation time and the next resourceVersion. */
  create(kind: Kind, object: KubeObject): KubeObject {
    const key = `${object.metadata.namespace}/${object.metadata.name}`;
    if (this.#objects[kind].has(key)) throw new Error(`fake-kube: ${kind} ${key} exists`);
    const rv = ++this.#rv;
    const stored: KubeObject = {
      ...clone(object),
      apiVersion: KINDS[kind].apiVersion,
      kind: KINDS[kind].kind,
    };
    stored.metadata = {
      ...stored.metadata,
      uid: `uid-${++this.#uid}`,
      creationTimestamp: object.metadata.creationTimestamp ?? timestamp(rv),
      resourceVersion: String(rv),
    };
    this.#objects[kind].set(key, stored);
    this.#record(kind, 'ADDED', stored, rv);
    return clone(stored);
  }

  /** Changes an object in place through `change`, at the next resourceVersion. */
  update(kind: Kind, namespace: string, name: string, change: (o: KubeObject) => void): KubeObject {
    const key = `${namespace}/${name}`;
    const current = this.#objects[kind].get(key);
    if (current === undefined) throw new Error(`fake-kube: no ${kind} ${key}`);
    const next = clone(current);
    change(next);
    return this.#replace(kind, key, next, current);
  }

  remove(kind: Kind, namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    const current = this.#objects[kind].get(key);
    if (current === undefined) throw new Error(`fake-kube: no ${kind} ${key}`);
    this.#objects[kind].delete(key);
    const rv = ++this.#rv;
    // The real server sends the object's last state, with the deletion's resourceVersion.
    this.#record(
      kind,
      'DELETED',
      { ...current, metadata: { ...current.metadata, resourceVersion: String(rv) } },
      rv,
    );
  }

  /**
   * Ends every open watch: cleanly (the chunked response ends, as when the server's watch timeout
   * passes) or abruptly (the socket is destroyed mid-stream). Returns how many it ended.
   */
  breakWatches(how: 'end' | 'destroy' = 'end'): number {
    const n = this.#watchers.size;
    for (const w of [...this.#watchers]) {
      this.#watchers.delete(w);
      if (how === 'end') w.res.end();
      else w.res.socket?.destroy();
    }
    return n;
  }

  /**
   * Forgets the history up to `rv` (default: all of it): a watch from an older resourceVersion gets
   * 410 Gone, `as` an ERROR event (kube-apiserver's way) or an HTTP 410 status. Open watches go on.
   */
  expire(rv = this.#rv, as: GoneAs = 'event'): void {
    this.#compactedRv = Math.max(this.#compactedRv, rv);
    this.#history = this.#history.filter((c) => c.rv > this.#compactedRv);
    this.#goneAs = as;
  }

  /** Sends 410 Gone as an ERROR event on every open watch and ends it, as a server whose cache fell behind. */
  goneWatches(): number {
    const n = this.#watchers.size;
    for (const w of [...this.#watchers]) {
      this.#watchers.delete(w);
      w.res.end(`${JSON.stringify({ type: 'ERROR', object: goneStatus(this.#rv, this.#compactedRv) })}\n`);
    }
    return n;
  }

  /** Sends a BOOKMARK at the current resourceVersion to every watch that asked for bookmarks. */
  bookmark(): number {
    let n = 0;
    for (const w of this.#watchers) {
      if (!w.bookmarks) continue;
      const { apiVersion, kind } = KINDS[w.kind];
      const object = { apiVersion, kind, metadata: { resourceVersion: String(this.#rv) } };
      w.res.write(`${JSON.stringify({ type: 'BOOKMARK', object })}\n`);
      n++;
    }
    return n;
  }

  /** Answers the next `count` requests that `match` with 500 Internal Server Error. */
  failNext(match: (r: RecordedRequest) => boolean, count = 1): void {
    this.#failures.push({ match, left: count });
  }

  async close(): Promise<void> {
    this.breakWatches('destroy');
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #replace(kind: Kind, key: string, next: KubeObject, current: KubeObject): KubeObject {
    const rv = ++this.#rv;
    next.metadata = {
      ...next.metadata,
      name: current.metadata.name,
      namespace: current.metadata.namespace,
      uid: current.metadata.uid!,
      creationTimestamp: current.metadata.creationTimestamp!,
      resourceVersion: String(rv),
    };
    next.apiVersion = current.apiVersion!;
    next.kind = current.kind!;
    this.#objects[kind].set(key, next);
    this.#record(kind, 'MODIFIED', next, rv);
    return clone(next);
  }

  #record(kind: Kind, type: Change['type'], object: KubeObject, rv: number): void {
    const change: Change = { rv, kind, type, object: clone(object) };
    this.#history.push(change);
    for (const w of this.#watchers) {
      if (matches(w, change)) w.res.write(eventLine(change));
    }
  }

  #serve(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://fake');
    const request: RecordedRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
    };
    if (this.requests.length < MAX_RECORDED) this.requests.push(request);
    if (req.headers.authorization !== `Bearer ${this.#token}`) {
      return status(res, 401, 'Unauthorized', 'Unauthorized');
    }
    const failure = this.#failures.find((f) => f.left > 0 && f.match(request));
    if (failure !== undefined) {
      failure.left--;
      return status(res, 500, 'InternalError', 'injected failure');
    }
    const route = parsePath(url.pathname);
    if (route === undefined) return status(res, 404, 'NotFound', `the server could not find ${url.pathname}`);
    const { kind, namespace, name, subresource } = route;
    if (request.method === 'GET' && name === undefined) {
      if (request.query.watch === 'true' || request.query.watch === '1')
        return this.#watch(kind, namespace, request, res);
      return this.#list(kind, namespace, res);
    }
    if (request.method === 'GET' && name !== undefined && subresource === undefined) {
      const found = this.#objects[kind].get(`${namespace}/${name}`);
      if (found === undefined) return status(res, 404, 'NotFound', `${kind} "${name}" not found`);
      return json(res, 200, found);
    }
    if (request.method === 'PUT' && name !== undefined && subresource === 'status' && kind === 'ingresses') {
      return void readJson(req).then(
        (body) => this.#putStatus(kind, `${namespace}/${name}`, body, res),
        () => status(res, 400, 'BadRequest', 'the body is not JSON'),
      );
    }
    return status(res, 405, 'MethodNotAllowed', `${request.method} is not served here`);
  }

  #list(kind: Kind, namespace: string | undefined, res: ServerResponse): void {
    const items = [...this.#objects[kind].entries()]
      .filter(([key]) => namespace === undefined || key.startsWith(`${namespace}/`))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      // A list's items carry no kind or apiVersion: the list says them once.
      .map(([, o]) => {
        const { apiVersion: _a, kind: _k, ...item } = o;
        return item;
      });
    const { apiVersion, kind: itemKind } = KINDS[kind];
    json(res, 200, {
      apiVersion,
      kind: `${itemKind}List`,
      metadata: { resourceVersion: String(this.#rv) },
      items,
    });
  }

  #watch(kind: Kind, namespace: string | undefined, request: RecordedRequest, res: ServerResponse): void {
    const from = request.query.resourceVersion ?? '';
    const start = from === '' || from === '0' ? undefined : Number(from);
    if (start !== undefined && !(Number.isInteger(start) && start >= 0)) {
      return status(res, 400, 'BadRequest', `invalid resourceVersion ${JSON.stringify(from)}`);
    }
    if (start !== undefined && start < this.#compactedRv) {
      if (this.#goneAs === 'status') return json(res, 410, goneStatus(start, this.#compactedRv));
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(`${JSON.stringify({ type: 'ERROR', object: goneStatus(start, this.#compactedRv) })}\n`);
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const watcher: Watcher = {
      kind,
      namespace,
      bookmarks: request.query.allowWatchBookmarks === 'true',
      res,
    };
    if (start === undefined) {
      // No resourceVersion: the current state as ADDED events, then the changes from now on.
      for (const object of this.#objects[kind].values()) {
        const change: Change = { rv: Number(object.metadata.resourceVersion), kind, type: 'ADDED', object };
        if (matches(watcher, change)) res.write(eventLine(change));
      }
    } else {
      for (const change of this.#history) {
        if (change.rv > start && matches(watcher, change)) res.write(eventLine(change));
      }
    }
    this.#watchers.add(watcher);
    res.on('close', () => this.#watchers.delete(watcher));
  }

  #putStatus(kind: Kind, key: string, body: unknown, res: ServerResponse): void {
    const current = this.#objects[kind].get(key);
    if (current === undefined) return status(res, 404, 'NotFound', `${kind} "${key}" not found`);
    const given = body as Partial<KubeObject> | null;
    const rv = given?.metadata?.resourceVersion;
    // Optimistic concurrency, as the real server: a write against an old version is a conflict.
    if (rv !== undefined && rv !== current.metadata.resourceVersion) {
      const message = `Operation cannot be fulfilled on ${kind} "${key}": the object has been modified`;
      return status(res, 409, 'Conflict', message);
    }
    this.statusWrites.push({ object: key, status: clone(given?.status ?? {}), resourceVersion: rv ?? '' });
    // The status subresource changes the status only, whatever else the body says.
    const next = { ...clone(current), status: clone(given?.status ?? {}) };
    json(res, 200, this.#replace(kind, key, next, current));
  }
}

function parsePath(
  path: string,
):
  | { kind: Kind; namespace: string | undefined; name: string | undefined; subresource: string | undefined }
  | undefined {
  const m =
    /^(\/apis\/networking\.k8s\.io\/v1|\/api\/v1)(?:\/namespaces\/([^/]+))?\/(ingresses|services)(?:\/([^/]+)(?:\/([^/]+))?)?$/.exec(
      path,
    );
  if (m === null) return undefined;
  const kind = m[3] as Kind;
  if (KINDS[kind].prefix !== m[1]) return undefined;
  // A named object lives in a namespace.
  if (m[4] !== undefined && m[2] === undefined) return undefined;
  return { kind, namespace: m[2], name: m[4], subresource: m[5] };
}

function matches(w: Watcher, change: Change): boolean {
  return (
    w.kind === change.kind && (w.namespace === undefined || w.namespace === change.object.metadata.namespace)
  );
}

function eventLine(change: Change): string {
  return `${JSON.stringify({ type: change.type, object: change.object })}\n`;
}

function goneStatus(asked: number, oldest: number): Record<string, unknown> {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: `too old resource version: ${asked} (${oldest})`,
    reason: 'Expired',
    code: 410,
  };
}

function status(res: ServerResponse, code: number, reason: string, message: string): void {
  json(res, code, {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason,
    code,
  });
}

function json(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function readJson(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > BODY_LIMIT) return req.destroy(new Error('body too large'));
      chunks.push(chunk);
    });
    req.on('error', reject);
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch (err) {
        reject(err as Error);
      }
    });
  });
}

function timestamp(rv: number): string {
  return new Date(EPOCH_MS + rv * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function clone<T>(value: T): T {
  return structuredClone(value);
}

// --- Objects, as tests write them -------------------------------------------------------------------

export interface IngressPath {
  path?: string;
  pathType?: string;
  service: string;
  port: number | string;
}

/** An Ingress of class `sluice` (or `className`) with one rule per host. */
export function ingress(
  namespace: string,
  name: string,
  rules: { host?: string; paths: IngressPath[] }[],
  className: string | null = 'sluice',
): KubeObject {
  return {
    metadata: { name, namespace },
    spec: {
      ...(className === null ? {} : { ingressClassName: className }),
      rules: rules.map((r) => ({
        ...(r.host === undefined ? {} : { host: r.host }),
        http: {
          paths: r.paths.map((p) => ({
            path: p.path ?? '/',
            pathType: p.pathType ?? 'Prefix',
            backend: {
              service: {
                name: p.service,
                port: typeof p.port === 'number' ? { number: p.port } : { name: p.port },
              },
            },
          })),
        },
      })),
    },
  };
}

/** A Service with these ports (name → port) and annotations. */
export function service(
  namespace: string,
  name: string,
  ports: Record<string, number>,
  annotations: Record<string, string> = {},
): KubeObject {
  return {
    metadata: { name, namespace, ...(Object.keys(annotations).length > 0 ? { annotations } : {}) },
    spec: {
      type: 'ClusterIP',
      ports: Object.entries(ports).map(([portName, port]) => ({
        ...(portName === '' ? {} : { name: portName }),
        port,
        protocol: 'TCP',
        targetPort: port,
      })),
    },
  };
}
