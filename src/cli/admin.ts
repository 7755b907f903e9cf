// The admin commands (`cluster`, `token`, `route`, `status`): thin clients of the admin REST API. They
// print aligned tables, or the API's JSON with --json. An API error prints its message and exits 1; bad
// flags or a missing admin token print usage and exit 2.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { flag, type Flag, flagsUsage, parseArgsOptions } from '../config/flags.js';
import { flagProblem } from './flags.js';
import type { Run } from './run.js';

export const ADMIN_COMMANDS = ['cluster', 'token', 'route', 'tcp-route', 'status'] as const;

const DEFAULT_ADMIN = 'http://127.0.0.1:8081';
const DEFAULT_TOKEN_FILE = './.sluice/admin-token';

// Each command's flags, declared once (config/flags.ts): the usage and the parseArgs spec come from
// these tables.
const COMMON_FLAGS = [
  flag({
    name: 'admin',
    key: 'admin',
    value: 'URL',
    shown: DEFAULT_ADMIN,
    help: "the controller's admin listener",
  }),
  flag({
    name: 'admin-token-file',
    key: 'adminTokenFile',
    value: 'FILE',
    env: false,
    shown: `$SLUICE_ADMIN_TOKEN, else ${DEFAULT_TOKEN_FILE} when it exists`,
    help: 'read the admin token from FILE',
  }),
  flag({ name: 'json', key: 'json', env: false, help: "print the API's JSON instead of a table" }),
] as const;

const ROUTE_FLAGS = [
  flag({
    name: 'cluster',
    key: 'cluster',
    value: 'NAME',
    env: false,
    help: 'the cluster whose agents serve the route (add)',
  }),
  flag({
    name: 'target',
    key: 'target',
    value: 'URL',
    env: false,
    help: 'where the agent sends requests, http://, https:// or h2c://host:port (add)',
  }),
  flag({
    name: 'server-name',
    key: 'serverName',
    value: 'NAME',
    env: false,
    help: 'for an https:// target, the name its certificate must carry (add)',
  }),
  flag({
    name: 'tls',
    key: 'tls',
    value: 'passthrough',
    env: false,
    help: 'passthrough: relay TLS connections whose SNI names HOST, still encrypted, to a tcp:// target (add)',
  }),
  flag({ name: 'path', key: 'path', value: 'P', env: false, shown: '/', help: 'path prefix' }),
  ...COMMON_FLAGS,
] as const;

const TCP_ROUTE_FLAGS = [
  flag({
    name: 'cluster',
    key: 'cluster',
    value: 'NAME',
    env: false,
    help: 'the cluster whose agents serve the TCP route (add)',
  }),
  flag({
    name: 'target',
    key: 'target',
    value: 'URL',
    env: false,
    help: 'where the agent connects, tcp://host:port (add)',
  }),
  flag({
    name: 'proxy-protocol',
    key: 'proxyProtocol',
    value: 'V',
    env: false,
    help: 'send the target a PROXY protocol header first; only v2 (add)',
  }),
  ...COMMON_FLAGS,
] as const;

const TABLES: Record<(typeof ADMIN_COMMANDS)[number], readonly Flag[]> = {
  cluster: COMMON_FLAGS,
  token: COMMON_FLAGS,
  route: ROUTE_FLAGS,
  'tcp-route': TCP_ROUTE_FLAGS,
  status: COMMON_FLAGS,
};

const USAGES: Record<(typeof ADMIN_COMMANDS)[number], string> = {
  cluster: `Usage: sluice cluster add NAME | ls | rm NAME [flags]\n\n${flagsUsage(COMMON_FLAGS)}`,
  token: `Usage: sluice token create CLUSTER | ls CLUSTER | revoke ID [flags]

create prints the new agent token once; only its hash is stored.

${flagsUsage(COMMON_FLAGS)}`,
  route: `Usage: sluice route add HOST --cluster NAME --target URL [--path P] [--server-name NAME] [--tls passthrough] | ls | rm HOST [--path P] [flags]

${flagsUsage(ROUTE_FLAGS)}`,
  'tcp-route': `Usage: sluice tcp-route add LISTEN --cluster NAME --target tcp://HOST:PORT [--proxy-protocol v2] | ls | rm LISTEN [flags]

LISTEN is host:port (an IP address; port 0 binds a free one, printed by add). A TCP route added here
lasts until the controller restarts; rm names it by the address ls shows.

${flagsUsage(TCP_ROUTE_FLAGS)}`,
  status: `Usage: sluice status [flags]\n\nLists the live tunnels; on a fleet member, the fleet's controllers after them.\n\n${flagsUsage(COMMON_FLAGS)}`,
};

/** What an API call failed with: printed, exit 1. */
class ApiFailure extends Error {}
/** Bad usage: printed with the usage, exit 2. */
class UsageError extends Error {}

interface Client {
  call(method: string, path: string, body?: unknown): Promise<unknown>;
}

export async function adminCommand(
  command: (typeof ADMIN_COMMANDS)[number],
  args: string[],
  run: Run,
): Promise<number> {
  const usage = USAGES[command];
  const options = parseArgsOptions(TABLES[command]);
  let parsed;
  try {
    parsed = parseArgs({ args, allowPositionals: true, options });
  } catch (err) {
    run.io.err(`sluice ${command}: ${flagProblem(err, Object.keys(options))}\n\n${usage}`);
    return 2;
  }
  const { positionals } = parsed;
  const values = parsed.values as Values & { admin?: string; json?: boolean; help?: boolean };
  if (values.help === true) {
    run.io.out(usage);
    return 0;
  }
  try {
    const client = connect(values.admin ?? run.env.SLUICE_ADMIN ?? DEFAULT_ADMIN, adminToken(values, run));
    const action = ACTIONS[command];
    const output = await action(positionals, values, client, values.json === true);
    run.io.out(output);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      run.io.err(`sluice ${command}: ${err.message}\n\n${usage}`);
      return 2;
    }
    run.io.err(`sluice ${command}: ${(err as Error).message}\n`);
    return 1;
  }
}

type Values = {
  'admin-token-file'?: string;
  cluster?: string;
  target?: string;
  path?: string;
  'server-name'?: string;
  tls?: string;
  'proxy-protocol'?: string;
};
type Action = (args: string[], values: Values, client: Client, json: boolean) => Promise<string>;

const ACTIONS: Record<(typeof ADMIN_COMMANDS)[number], Action> = {
  async cluster(args, values, client, json) {
    const [verb, name] = args;
    if (verb === 'ls') {
      expect(args, 1);
      const r = (await client.call('GET', '/api/clusters')) as { clusters: Row[] };
      return json ? show(r) : table(r.clusters, ['name', 'source', 'created']);
    }
    if (verb === 'add' || verb === 'rm') {
      expect(args, 2);
      if (verb === 'add') {
        const r = await client.call('POST', '/api/clusters', { name });
        return json ? show(r) : `cluster ${name} added\n`;
      }
      const r = await client.call('DELETE', `/api/clusters/${encodeURIComponent(name!)}`);
      return json ? show(r) : `cluster ${name} deleted\n`;
    }
    throw new UsageError(verb === undefined ? 'add, ls or rm is required' : `unknown verb '${verb}'`);
  },

  async token(args, _values, client, json) {
    const [verb, arg] = args;
    if (verb === 'create' || verb === 'ls') {
      expect(args, 2);
      const path = `/api/clusters/${encodeURIComponent(arg!)}/tokens`;
      if (verb === 'create') {
        const r = (await client.call('POST', path)) as { token: string };
        // The token alone on stdout, so that it can be captured; it is not shown again.
        return json ? show(r) : `${r.token}\n`;
      }
      const r = (await client.call('GET', path)) as { tokens: Row[] };
      return json ? show(r) : table(r.tokens, ['id', 'cluster', 'source', 'created', 'revoked']);
    }
    if (verb === 'revoke') {
      expect(args, 2);
      const r = await client.call('DELETE', `/api/tokens/${encodeURIComponent(arg!)}`);
      return json ? show(r) : `token ${arg} revoked\n`;
    }
    throw new UsageError(verb === undefined ? 'create, ls or revoke is required' : `unknown verb '${verb}'`);
  },

  async route(args, values, client, json) {
    const [verb, host] = args;
    if (verb === 'ls') {
      expect(args, 1);
      const r = (await client.call('GET', '/api/routes')) as { routes: Row[] };
      return json ? show(r) : table(r.routes, ['host', 'path', 'cluster', 'target', 'tls', 'source']);
    }
    if (verb === 'add') {
      expect(args, 2);
      if (values.cluster === undefined) throw new UsageError('--cluster is required');
      if (values.target === undefined) throw new UsageError('--target is required');
      const serverName = values['server-name'];
      const body = {
        host,
        cluster: values.cluster,
        target: values.target,
        ...pathOf(values),
        ...(serverName === undefined ? {} : { serverName }),
        ...(values.tls === undefined ? {} : { tls: values.tls }),
      };
      const r = (await client.call('POST', '/api/routes', body)) as { route: Row };
      return json ? show(r) : `route ${String(r.route.host)}${String(r.route.path)} added\n`;
    }
    if (verb === 'rm') {
      expect(args, 2);
      const query = new URLSearchParams({ host: host!, ...pathOf(values) });
      const r = await client.call('DELETE', `/api/routes?${query}`);
      return json ? show(r) : `route ${host}${values.path ?? '/'} deleted\n`;
    }
    throw new UsageError(verb === undefined ? 'add, ls or rm is required' : `unknown verb '${verb}'`);
  },

  async 'tcp-route'(args, values, client, json) {
    const [verb, listen] = args;
    if (verb === 'ls') {
      expect(args, 1);
      const r = (await client.call('GET', '/api/tcp-routes')) as { tcpRoutes: Row[] };
      const rows = r.tcpRoutes.map((t) => ({ ...t, proxyProtocol: t.proxyProtocol ?? '-' }));
      return json
        ? show(r)
        : table(rows, ['listen', 'address', 'cluster', 'target', 'proxyProtocol', 'openConnections']);
    }
    if (verb === 'add') {
      expect(args, 2);
      if (values.cluster === undefined) throw new UsageError('--cluster is required');
      if (values.target === undefined) throw new UsageError('--target is required');
      const proxyProtocol = values['proxy-protocol'];
      const body = {
        listen,
        cluster: values.cluster,
        target: values.target,
        ...(proxyProtocol === undefined ? {} : { proxyProtocol }),
      };
      const r = (await client.call('POST', '/api/tcp-routes', body)) as { tcpRoute: Row };
      return json ? show(r) : `tcp route ${String(r.tcpRoute.address)} added\n`;
    }
    if (verb === 'rm') {
      expect(args, 2);
      await client.call('DELETE', `/api/tcp-routes/${encodeURIComponent(listen!)}`);
      return json ? show({ deleted: listen }) : `tcp route ${listen} deleted\n`;
    }
    throw new UsageError(verb === undefined ? 'add, ls or rm is required' : `unknown verb '${verb}'`);
  },

  async status(args, _values, client, json) {
    expect(args, 0);
    const [r, fleet] = (await Promise.all([
      client.call('GET', '/api/tunnels'),
      client.call('GET', '/api/fleet'),
    ])) as [{ tunnels: Row[] }, FleetView];
    if (json) return show(fleet.fleet ? { ...r, fleet: fleet.instances } : r);
    // rttMs is -1 until the first ping has measured it: shown as '-'.
    const rows = r.tunnels.map((t) => ({ ...t, rtt: rtt(Number(t.rttMs)) }));
    const cols = [
      'cluster',
      'agent',
      'replica',
      'version',
      'remote',
      'since',
      'rtt',
      'streams',
      'bytesIn',
      'bytesOut',
    ];
    return fleet.fleet ? `${table(rows, cols)}\n${fleetTable(fleet.instances)}` : table(rows, cols);
  },
};

interface FleetView {
  fleet: boolean;
  instances: { id: string; self: boolean; clusters: Record<string, number>; [field: string]: unknown }[];
}

/** A fleet member's view of the fleet: one row per controller, this one marked, its clusters' counts. */
function fleetTable(instances: FleetView['instances']): string {
  const rows = instances.map((i) => ({
    ...i,
    instance: i.self ? `${i.id} (this)` : i.id,
    state: i.draining === true ? 'draining' : 'serving',
    clusters: Object.entries(i.clusters)
      .map(([name, n]) => `${name}:${n}`)
      .join(' '),
  }));
  return table(rows, ['instance', 'advertise', 'since', 'state', 'sessions', 'clusters']);
}

type Row = Record<string, unknown>;

function rtt(ms: number): string | undefined {
  return Number.isFinite(ms) && ms >= 0 ? `${Math.round(ms)}ms` : undefined;
}

function pathOf(values: Values): { path?: string } {
  return values.path === undefined ? {} : { path: values.path };
}

function expect(args: string[], count: number): void {
  if (args.length < count) throw new UsageError(`missing argument after '${args.join(' ')}'`);
  if (args.length > count) throw new UsageError(`unexpected argument '${args[count]}'`);
}

function show(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

/** Columns padded to their widest cell; headers in capitals; null shows as `-`. */
export function table(rows: readonly Row[], columns: readonly string[]): string {
  const cells = [
    columns.map((c) => c.toUpperCase()),
    ...rows.map((row) =>
      columns.map((c) => (row[c] === null || row[c] === undefined ? '-' : String(row[c]))),
    ),
  ];
  const widths = columns.map((_, i) => Math.max(...cells.map((line) => line[i]!.length)));
  return cells
    .map(
      (line) =>
        line
          .map((cell, i) => cell.padEnd(widths[i]!))
          .join('  ')
          .trimEnd() + '\n',
    )
    .join('');
}

function adminToken(values: Values, run: Run): string {
  const file = values['admin-token-file'];
  if (file !== undefined) return readToken(file);
  const env = run.env.SLUICE_ADMIN_TOKEN;
  if (env !== undefined && env !== '') return env;
  try {
    return readToken(DEFAULT_TOKEN_FILE);
  } catch {
    throw new UsageError(
      `no admin token: set SLUICE_ADMIN_TOKEN or pass --admin-token-file (${DEFAULT_TOKEN_FILE} was not found)`,
    );
  }
}

function readToken(file: string): string {
  const token = readFileSync(file, 'utf8').trim();
  if (token === '') throw new UsageError(`the admin token file ${file} is empty`);
  return token;
}

function connect(admin: string, token: string): Client {
  let base: URL;
  try {
    base = new URL(admin);
  } catch {
    throw new UsageError(`--admin must be a URL such as ${DEFAULT_ADMIN}, got ${JSON.stringify(admin)}`);
  }
  return {
    async call(method, path, body) {
      let res: Response;
      try {
        res = await fetch(new URL(path, base), {
          method,
          headers: {
            authorization: `Bearer ${token}`,
            ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          },
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(15_000),
        });
      } catch (err) {
        const cause = (err as { cause?: Error }).cause?.message ?? (err as Error).message;
        throw new ApiFailure(`cannot reach the admin API at ${base.origin}: ${cause}`);
      }
      const text = await res.text();
      // 204 (a deleted TCP route) has no body by design.
      if (res.status === 204) return {};
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        throw new ApiFailure(`the admin API answered ${res.status} with no JSON`);
      }
      if (!res.ok) {
        const error = (json as { error?: { message?: string; field?: string } }).error;
        const field = error?.field === undefined ? '' : `${error.field}: `;
        throw new ApiFailure(`${field}${error?.message ?? `HTTP ${res.status}`}`);
      }
      return json;
    },
  };
}
