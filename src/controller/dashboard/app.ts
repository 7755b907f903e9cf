// The dashboard's script. It runs in the browser, not in Node: tsc compiles it with the rest, and the
// admin listener serves the output as /dashboard/app.js (a module script). It imports nothing.
//
// Session: the admin token is kept in sessionStorage and sent by fetch() as `Authorization: Bearer`,
// exactly as the CLI sends it. No cookie is ever set, so the browser never attaches a credential on its
// own: another site cannot make requests with it (no CSRF), and a DNS-rebinding page on this origin
// would still lack the token. sessionStorage lives as long as the tab; "Log out" clears it. What could
// read it is script on this origin, and the page allows only its own (the Content-Security-Policy has
// no inline script, and Trusted Types refuses every innerHTML), while every value from the API reaches
// the page through textContent: hosts and paths come from the public internet.
//
// Live updates: short polling, once a second, of the API the CLI uses (/api/clusters, /api/tunnels,
// /api/traffic). A stream (SSE read through fetch, as EventSource cannot send the header) would need a
// per-client push loop on the controller, its own throttling (a request firehose is no use on a page
// redrawn once a second) and reconnect logic here; a snapshot every second shows the same thing, costs
// the controller three small requests per open tab, holds no connection through a drain, and survives a
// controller restart by itself. The next poll is scheduled when the last one ends, so they never pile
// up, and polling pauses while the tab is hidden.

// The project compiles without the DOM library, which would make browser globals look available to the
// Node code. The few DOM members used here are declared for this module only.
interface Element {
  textContent: string | null;
  hidden: boolean;
  className: string;
  title: string;
  colSpan: number;
  disabled: boolean;
  value: string;
  readonly tBodies: ArrayLike<Element>;
  append(...nodes: (Element | string)[]): void;
  replaceChildren(...nodes: (Element | string)[]): void;
  remove(): void;
  focus(): void;
  addEventListener(type: string, listener: (event: { preventDefault(): void }) => void): void;
}
declare const document: {
  readonly hidden: boolean;
  getElementById(id: string): Element | null;
  createElement(tag: string): Element;
  addEventListener(type: 'visibilitychange', listener: () => void): void;
};
declare const sessionStorage: {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
};

/** What the admin API answers (see /api/openapi.json); only the fields shown here. */
interface Cluster {
  name: string;
}
interface Tunnel {
  cluster: string;
  agent: string;
  replica: string;
  /** null for an agent whose HELLO carried no version. */
  version: string | null;
  remote: string | null;
  since: string;
  /** -1 until the first ping has come back. */
  rttMs: number;
  streams: number;
  bytesIn: number;
  bytesOut: number;
  draining: boolean;
}
interface Rates {
  requests: number;
  perSecond: number;
  errors5xx: number;
  failed: number;
}
interface RouteTraffic extends Rates {
  host: string;
  path: string;
  cluster: string;
  target: string;
}
interface RecentRequest {
  at: string;
  requestId: string;
  method: string;
  host: string;
  path: string;
  status: number;
  ms: number;
  bytesIn: number;
  bytesOut: number;
  outcome: string | null;
  reason: string | null;
}
interface TcpRouteTraffic {
  kind: 'tcp' | 'tls-passthrough';
  route: string;
  cluster: string;
  target: string;
  open: number;
  connections: number;
  refused: number;
  bytesIn: number;
  bytesOut: number;
}
interface RecentConnection {
  at: string;
  kind: 'tcp' | 'tls-passthrough';
  client: string;
  route: string;
  target: string;
  ms: number;
  bytesIn: number;
  bytesOut: number;
  outcome: string;
}
interface TrafficSnapshot {
  windowSeconds: number;
  routes: RouteTraffic[];
  unrouted: Rates;
  requests: RecentRequest[];
  tcpRoutes: TcpRouteTraffic[];
  connections: RecentConnection[];
}
interface Snapshot {
  clusters: Cluster[];
  tunnels: Tunnel[];
  traffic: TrafficSnapshot;
  fleet: FleetView;
}

/** GET /api/fleet: a lone controller answers `fleet: false` and no instances. */
interface FleetView {
  fleet: boolean;
  instances: {
    id: string;
    advertise: string;
    since: string;
    draining: boolean;
    self: boolean;
    clusters: Record<string, number>;
    sessions?: number;
  }[];
}

const TOKEN_KEY = 'sluice.adminToken';
const POLL_MS = 1000;
const REQUEST_TIMEOUT_MS = 5000;

/** The API refused the token (401). */
class Unauthorized extends Error {}

function $(id: string): Element {
  const element = document.getElementById(id);
  if (element === null) throw new Error(`the page has no #${id}`);
  return element;
}

async function getJson<T>(path: string, token: string): Promise<T> {
  const res = await fetch(path, {
    headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  if (res.status === 401) throw new Unauthorized('the admin token was refused');
  if (!res.ok) {
    const body = (await res.json().catch(() => null)) as { error?: { message?: string } } | null;
    throw new Error(body?.error?.message ?? `the controller answered ${res.status}`);
  }
  return (await res.json()) as T;
}

async function fetchSnapshot(token: string): Promise<Snapshot> {
  const [clusters, tunnels, traffic, fleet] = await Promise.all([
    getJson<{ clusters: Cluster[] }>('/api/clusters', token),
    getJson<{ tunnels: Tunnel[] }>('/api/tunnels', token),
    getJson<TrafficSnapshot>('/api/traffic', token),
    getJson<FleetView>('/api/fleet', token),
  ]);
  return { clusters: clusters.clusters, tunnels: tunnels.tunnels, traffic, fleet };
}

// ---- formatting: every function returns plain text, which goes in with textContent

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

function duration(ms: number): string {
  return ms < 1000 ? `${ms.toFixed(1)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function ago(iso: string, now: number): string {
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s ago`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min ago`;
  return `${Math.floor(s / 86_400)} d ${Math.floor((s % 86_400) / 3600)} h ago`;
}

/** Local time of day to the millisecond: requests a few ms apart stay apart. */
function clock(iso: string): string {
  const d = new Date(iso);
  return `${d.toTimeString().slice(0, 8)}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

function rate(perSecond: number): string {
  if (perSecond === 0) return '0';
  return perSecond < 1
    ? perSecond.toFixed(2)
    : perSecond < 10
      ? perSecond.toFixed(1)
      : String(Math.round(perSecond));
}

function share(count: number, of: number): string {
  if (of === 0) return '–';
  return `${Math.round((count / of) * 100)}%`;
}

// ---- rendering

function cell(text: string, className = ''): Element {
  const td = document.createElement('td');
  td.textContent = text;
  if (className !== '') td.className = className;
  // A cell cut short with an ellipsis shows its whole text on hover.
  if (className.includes('clip')) td.title = text;
  return td;
}

function row(cells: Element[], className = '', title = ''): Element {
  const tr = document.createElement('tr');
  tr.append(...cells);
  if (className !== '') tr.className = className;
  if (title !== '') tr.title = title;
  return tr;
}

function spanning(text: string, columns: number, className: string): Element {
  const td = cell(text);
  td.colSpan = columns;
  return row([td], className);
}

function renderCounts(snapshot: Snapshot): void {
  const { traffic } = snapshot;
  const total = traffic.routes.reduce((sum, r) => sum + r.perSecond, traffic.unrouted.perSecond);
  $('count-clusters').textContent = String(snapshot.clusters.length);
  $('count-tunnels').textContent = String(snapshot.tunnels.length);
  $('count-routes').textContent = String(traffic.routes.length);
  $('count-rate').textContent = rate(total);
}

/** One tbody per cluster: a heading row, then its tunnels (or a note that no agent is connected). */
function renderTunnels(snapshot: Snapshot): void {
  const table = $('tunnels');
  for (const body of Array.from(table.tBodies)) body.remove();
  const byCluster = new Map<string, Tunnel[]>(snapshot.clusters.map((c) => [c.name, []]));
  for (const t of snapshot.tunnels) {
    const list = byCluster.get(t.cluster);
    if (list === undefined) byCluster.set(t.cluster, [t]);
    else list.push(t);
  }
  const now = Date.now();
  for (const [name, tunnels] of byCluster) {
    const body = document.createElement('tbody');
    const heading = cell(name);
    heading.colSpan = 9;
    const agents = new Set(tunnels.map((t) => `${t.agent}\u0000${t.replica}`)).size;
    const note = document.createElement('span');
    note.className = tunnels.length === 0 ? 'warn' : 'muted';
    note.textContent =
      tunnels.length === 0
        ? ' \u00b7 no agent connected'
        : ` \u00b7 ${tunnels.length} tunnel${tunnels.length === 1 ? '' : 's'} from ${agents} agent${agents === 1 ? '' : 's'}`;
    heading.append(note);
    body.append(row([heading], 'group'));
    tunnels.sort((a, b) => a.agent.localeCompare(b.agent) || a.replica.localeCompare(b.replica));
    for (const t of tunnels) {
      const agent = cell(t.agent);
      if (t.draining) {
        const badge = document.createElement('span');
        badge.className = 'badge';
        badge.textContent = 'draining';
        agent.append(badge);
      }
      const since = cell(ago(t.since, now));
      since.title = new Date(t.since).toLocaleString();
      body.append(
        row([
          agent,
          cell(t.replica, 'mono'),
          cell(t.version ?? '–', 'mono'),
          cell(t.remote ?? '–', 'mono'),
          since,
          cell(t.rttMs < 0 ? '–' : `${t.rttMs.toFixed(1)} ms`, 'num'),
          cell(String(t.streams), 'num'),
          cell(bytes(t.bytesIn), 'num'),
          cell(bytes(t.bytesOut), 'num'),
        ]),
      );
    }
    table.append(body);
  }
  if (byCluster.size === 0) {
    const body = document.createElement('tbody');
    body.append(spanning('No clusters yet.', 9, 'empty'));
    table.append(body);
  }
}

function rateCells(r: Rates, windowS: number): Element[] {
  const errors = cell(share(r.errors5xx, r.requests), `num${r.errors5xx > 0 ? ' bad' : ''}`);
  errors.title = `${r.errors5xx} of ${r.requests} requests in the last ${windowS} s`;
  const failed = cell(share(r.failed, r.requests), `num${r.failed > 0 ? ' bad' : ''}`);
  failed.title = `${r.failed} of ${r.requests} requests in the last ${windowS} s`;
  const perSecond = cell(rate(r.perSecond), 'num');
  perSecond.title = `${r.requests} requests in the last ${windowS} s`;
  return [perSecond, errors, failed];
}

function renderRoutes(traffic: TrafficSnapshot): void {
  const windowS = traffic.windowSeconds;
  const rows = traffic.routes.map((r) =>
    row([
      cell(r.host, 'clip'),
      cell(r.path, 'mono clip'),
      cell(r.cluster),
      cell(r.target, 'mono'),
      ...rateCells(r, windowS),
    ]),
  );
  if (rows.length === 0) rows.push(spanning('No routes yet.', 7, 'empty'));
  const unrouted = row(
    [cell('no route matched (404), or refused before routing', 'muted'), cell(''), cell(''), cell('')],
    'unrouted',
  );
  unrouted.append(...rateCells(traffic.unrouted, windowS));
  rows.push(unrouted);
  $('routes').tBodies[0]!.replaceChildren(...rows);
  $('window').textContent = String(windowS);
}

function renderRequests(traffic: TrafficSnapshot): void {
  const rows = traffic.requests.map((r) => {
    const status = r.status === 0 ? '–' : String(r.status);
    // On hover: how it ended, when not plainly, and why Sluice answered with an error page.
    const detail = [r.outcome === 'done' ? null : r.outcome, r.reason].filter((x) => x !== null).join(': ');
    return row(
      [
        cell(clock(r.at), 'mono'),
        cell(r.method),
        cell(r.host, 'clip'),
        cell(r.path, 'mono clip'),
        cell(status, `num s${String(r.status).charAt(0)}`),
        cell(duration(r.ms), 'num'),
        cell(bytes(r.bytesIn), 'num'),
        cell(bytes(r.bytesOut), 'num'),
        cell(r.requestId, 'mono'),
      ],
      '',
      detail,
    );
  });
  if (rows.length === 0) rows.push(spanning('No requests yet.', 9, 'empty'));
  $('requests').tBodies[0]!.replaceChildren(...rows);
}

const KIND: Record<TcpRouteTraffic['kind'], string> = { tcp: 'TCP', 'tls-passthrough': 'TLS passthrough' };

function renderTcpRoutes(traffic: TrafficSnapshot): void {
  const rows = traffic.tcpRoutes.map((r) =>
    row([
      cell(KIND[r.kind]),
      cell(r.route, 'mono clip'),
      cell(r.cluster),
      cell(r.target, 'mono'),
      cell(String(r.open), 'num'),
      cell(String(r.connections), 'num'),
      cell(String(r.refused), `num${r.refused > 0 ? ' warn' : ''}`),
      cell(bytes(r.bytesIn), 'num'),
      cell(bytes(r.bytesOut), 'num'),
    ]),
  );
  if (rows.length === 0) rows.push(spanning('No TCP or passthrough routes.', 9, 'empty'));
  $('tcp-routes').tBodies[0]!.replaceChildren(...rows);
}

function renderConnections(traffic: TrafficSnapshot): void {
  const rows = traffic.connections.map((c) =>
    row(
      [
        cell(clock(c.at), 'mono'),
        cell(c.client, 'mono'),
        cell(c.route, 'mono clip'),
        cell(c.target, 'mono'),
        cell(duration(c.ms), 'num'),
        cell(bytes(c.bytesIn), 'num'),
        cell(bytes(c.bytesOut), 'num'),
        cell(c.outcome, c.outcome === 'done' ? '' : 'bad'),
      ],
      '',
      KIND[c.kind],
    ),
  );
  if (rows.length === 0) rows.push(spanning('No TCP connections yet.', 8, 'empty'));
  $('connections').tBodies[0]!.replaceChildren(...rows);
}

/** The fleet's controllers, shown only on a fleet member. */
function renderFleet(view: FleetView): void {
  $('fleet-view').hidden = !view.fleet;
  if (!view.fleet) return;
  const now = Date.now();
  const rows = view.instances.map((i) => {
    const clusters = Object.entries(i.clusters)
      .map(([name, n]) => `${name} (${n})`)
      .join(', ');
    return row(
      [
        cell(i.self ? `${i.id} (this controller)` : i.id, 'clip'),
        cell(i.advertise, 'clip'),
        cell(ago(i.since, now)),
        cell(i.draining ? 'draining' : 'serving', i.draining ? 'warn' : ''),
        cell(i.sessions === undefined ? '–' : String(i.sessions), 'num'),
        cell(clusters === '' ? 'none' : clusters, 'clip'),
      ],
      i.self ? 'self' : '',
    );
  });
  $('fleet').tBodies[0]!.replaceChildren(...rows);
}

function render(snapshot: Snapshot): void {
  renderCounts(snapshot);
  renderTunnels(snapshot);
  renderFleet(snapshot.fleet);
  renderRoutes(snapshot.traffic);
  renderRequests(snapshot.traffic);
  renderTcpRoutes(snapshot.traffic);
  renderConnections(snapshot.traffic);
}

// ---- session and polling

let timer: ReturnType<typeof setTimeout> | undefined;
/** Bumped on login and logout: a poll that was under way then does not render or reschedule. */
let generation = 0;

function setStatus(text: string, stale: boolean): void {
  const status = $('status');
  status.hidden = false;
  status.textContent = text;
  status.className = stale ? 'status stale' : 'status';
}

function showLogin(message: string): void {
  generation++;
  clearTimeout(timer);
  sessionStorage.removeItem(TOKEN_KEY);
  for (const id of ['dashboard', 'counts', 'status', 'logout']) $(id).hidden = true;
  $('login').hidden = false;
  const error = $('login-error');
  error.textContent = message;
  error.hidden = message === '';
  $('token').focus();
}

/** Shows the tables: with the snapshot that the login fetched, or empty until the first poll answers. */
function showDashboard(token: string, first?: Snapshot): void {
  sessionStorage.setItem(TOKEN_KEY, token);
  $('login').hidden = true;
  for (const id of ['dashboard', 'counts', 'logout']) $(id).hidden = false;
  restart(token, first);
}

/** Starts a fresh polling loop; the one running before (if any) stops at its next turn. */
function restart(token: string, first?: Snapshot): void {
  generation++;
  clearTimeout(timer);
  if (first === undefined) {
    void poll(token, generation);
    return;
  }
  render(first);
  setStatus(`live \u00b7 ${clock(new Date().toISOString()).slice(0, 8)}`, false);
  schedule(token, generation);
}

function schedule(token: string, ours: number): void {
  clearTimeout(timer);
  if (document.hidden) return; // visibilitychange starts it again
  timer = setTimeout(() => void poll(token, ours), POLL_MS);
}

async function poll(token: string, ours: number): Promise<void> {
  try {
    const snapshot = await fetchSnapshot(token);
    if (ours !== generation) return;
    render(snapshot);
    setStatus(`live \u00b7 ${clock(new Date().toISOString()).slice(0, 8)}`, false);
  } catch (err) {
    if (ours !== generation) return;
    if (err instanceof Unauthorized) {
      showLogin('The controller no longer accepts this admin token. Sign in again.');
      return;
    }
    // Keep the last figures on the page and keep trying: the controller may be restarting.
    setStatus(`not updating: ${err instanceof Error ? err.message : String(err)}; retrying`, true);
  }
  schedule(token, ours);
}

async function login(event: { preventDefault(): void }): Promise<void> {
  event.preventDefault();
  const input = $('token');
  const token = input.value.trim();
  const error = $('login-error');
  if (token === '') {
    error.textContent = 'Enter the admin token.';
    error.hidden = false;
    return;
  }
  const submit = $('login-submit');
  submit.disabled = true;
  error.hidden = true;
  try {
    const first = await fetchSnapshot(token);
    input.value = '';
    showDashboard(token, first);
  } catch (err) {
    error.textContent =
      err instanceof Unauthorized
        ? 'Wrong admin token: the controller refused it.'
        : `Cannot sign in: ${err instanceof Error ? err.message : String(err)}.`;
    error.hidden = false;
  } finally {
    submit.disabled = false;
  }
}

function start(): void {
  $('login-form').addEventListener('submit', (event) => void login(event));
  $('logout').addEventListener('click', () => showLogin(''));
  document.addEventListener('visibilitychange', () => {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!document.hidden && token !== null && $('login').hidden) restart(token);
  });
  // A reload keeps the session: the saved token is checked by the first poll (a 401 there shows the
  // login again).
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved === null) showLogin('');
  else showDashboard(saved);
}

start();
