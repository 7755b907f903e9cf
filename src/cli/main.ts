// The thin CLI: argv in, exit code out (STYLE.md lesson 10). Each service command parses its flags,
// loads a validated config, starts the service from the library and runs it until SIGINT or SIGTERM.
// Bad flags print usage and exit 2 (DESIGN.md §5); so does any other reason the service cannot start
// (docs/configuration.md "Exit codes"). Commands that later issues build say so plainly rather than pretending. The
// admin commands live in admin.ts. The controller and dev are imported only when run: they load the
// SQLite store, which an agent neither needs nor may have installed.
import { parseArgs } from 'node:util';
import { pino, type Logger } from 'pino';
import { type AgentConfig, loadAgentConfig } from '../agent/config.js';
import { startAgent } from '../agent/agent.js';
import { ADMIN_COMMANDS, adminCommand } from './admin.js';
import { flagProblem } from './flags.js';
import {
  flagOrEnv,
  type HostPort,
  type LogLevel,
  MASKED,
  parseHostPort,
  parseLogLevel,
  parseOptionalHostPort,
} from '../config/values.js';
import { type ControllerConfig, loadControllerConfig } from '../controller/config.js';
import type { DevHandle, DevOptions } from '../dev/dev.js';
import { ConfigError } from '../errors.js';
import type { Io, Run } from './run.js';
import { sluiceVersion } from '../version.js';

const USAGE = `Usage: sluice <command> [flags]

Commands:
  controller   run the public gateway that agents dial
  agent        run an agent that dials out to a controller
  dev          controller + agent + demo service, on this machine
  cluster      add | ls | rm clusters            (admin API)
  token        create | ls | revoke tokens       (admin API)
  route        add | ls | rm routes              (admin API)
  status       show live tunnels                 (admin API)

Flags:
  -h, --help      show this help
  -v, --version   print the version

Run 'sluice <command> --help' for the flags of a command.
`;

const LEVELS = 'fatal, error, warn, info, debug, trace or silent';

const CONTROLLER_USAGE = `Usage: sluice controller [flags]

Runs the public gateway: HTTP clients on --listen, agents on --tunnel-listen.
A flag overrides its environment variable, which overrides the config file.

Flags:
  --config FILE          YAML config file ($SLUICE_CONFIG)
  --listen ADDR          public HTTP host:port, default 127.0.0.1:8080 ($SLUICE_LISTEN)
  --tunnel-listen ADDR   where agents dial: host:port (plain TCP) or a tcp://, tls://, ws:// or
                         wss:// URL, default tcp://127.0.0.1:7000 ($SLUICE_TUNNEL_LISTEN)
  --admin-listen ADDR    admin API host:port, or off, default 127.0.0.1:8081 ($SLUICE_ADMIN_LISTEN)
  --data DIR             data directory (store, admin token), default ./.sluice ($SLUICE_DATA)
  --store URL            shared store for a fleet: redis://HOST:PORT[/DB], rediss://… or
                         redis+sentinel://HOST:PORT,…/MASTER; default SQLite in --data ($SLUICE_STORE)
  --peer-listen ADDR     with --store: where peer controllers dial, as --tunnel-listen
                         ($SLUICE_PEER_LISTEN)
  --peer-advertise URL   with --store: the URL peers dial this controller at, e.g.
                         tcp://10.0.0.5:7001 ($SLUICE_PEER_ADVERTISE)
  --grace-period DUR     on SIGTERM, how long in-flight requests may finish, e.g. 30s; overrides
                         tunnel.gracePeriod, default 30s ($SLUICE_GRACE_PERIOD)
  --log-level LEVEL      ${LEVELS}, default info ($SLUICE_LOG_LEVEL)
  -h, --help             show this help
`;

const AGENT_USAGE = `Usage: sluice agent --controller URL --token TOKEN [flags]

Runs an agent: it dials the controller, holds tunnels open and sends each stream to its target.
A flag overrides its environment variable.

Flags:
  --controller URL       the controller's tunnel listener: tcp://, tls://, ws:// or wss://
                         (required, $SLUICE_CONTROLLER)
  --token TOKEN          the agent token (required, $SLUICE_TOKEN)
  --name NAME            agent name, default the host name ($SLUICE_NAME)
  --tunnels N            tunnels to hold open, 1 to 16, default 2 ($SLUICE_TUNNELS)
  --allow PATTERN        a target the agent may dial, host:port with * wildcards; repeatable,
                         e.g. --allow '*.svc.cluster.local:*' --allow 127.0.0.1:3000
                         ($SLUICE_ALLOW, comma-separated; default *.svc.cluster.local:*, *.svc:*)
  --health-listen ADDR   host:port for /healthz, /readyz and /metrics, default off
                         ($SLUICE_HEALTH_LISTEN)
  --ca FILE              PEM CA to trust for tls:// and wss:// ($SLUICE_CA)
  --servername NAME      name the controller's certificate must carry ($SLUICE_SERVERNAME)
  --grace-period DUR     on SIGTERM, how long in-flight streams may finish, default 30s
                         ($SLUICE_GRACE_PERIOD)
  --upgrade-grace DUR    on SIGTERM, how long upgraded connections (WebSockets) stay open before
                         they are closed, default 5s, at most the grace period ($SLUICE_UPGRADE_GRACE)
  --max-sockets-per-target N
                         connections to one target at once; more requests wait for a free one,
                         default 256 ($SLUICE_MAX_SOCKETS_PER_TARGET)
  --ping-interval DUR    how often each tunnel is pinged, default 15s ($SLUICE_PING_INTERVAL)
  --ping-timeout DUR     silence after which a tunnel is dead and redialed, default 3 ping
                         intervals ($SLUICE_PING_TIMEOUT)
  --log-level LEVEL      ${LEVELS}, default info ($SLUICE_LOG_LEVEL)
  -h, --help             show this help
`;

const DEV_USAGE = `Usage: sluice dev [flags]

Runs a controller, an agent and a demo service on this machine, with embedded defaults.
A flag overrides its environment variable.

Flags:
  --listen ADDR          public HTTP host:port, default 127.0.0.1:8080 ($SLUICE_LISTEN)
  --admin-listen ADDR    admin host:port or off, default 127.0.0.1:8081 ($SLUICE_ADMIN_LISTEN)
  --log-level LEVEL      ${LEVELS}, default info ($SLUICE_LOG_LEVEL)
  -h, --help             show this help
`;

const stdio: Io = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
};

/**
 * Runs one command. A service command runs until `signal` aborts; without one, until SIGINT or SIGTERM.
 * Resolves to the exit code.
 */
export async function main(argv: readonly string[], io: Io = stdio, signal?: AbortSignal): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    io.out(USAGE);
    return command === undefined ? 2 : 0;
  }
  if (command === '-v' || command === '--version') {
    io.out(`sluice ${sluiceVersion()}\n`);
    return 0;
  }
  const run = { io, signal, env: process.env };
  switch (command) {
    case 'controller':
      return controllerCommand(rest, run);
    case 'agent':
      return agentCommand(rest, run);
    case 'dev':
      return devCommand(rest, run);
  }
  const admin = ADMIN_COMMANDS.find((c) => c === command);
  if (admin !== undefined) return adminCommand(admin, rest, run);
  io.err(`sluice: unknown command '${command}'\n\n${USAGE}`);
  return 2;
}

const HELP = { type: 'boolean', short: 'h' } as const;
const STRING = { type: 'string' } as const;

function controllerCommand(args: string[], run: Run): Promise<number> {
  const options = {
    config: STRING,
    listen: STRING,
    'tunnel-listen': STRING,
    'admin-listen': STRING,
    data: STRING,
    store: STRING,
    'peer-listen': STRING,
    'peer-advertise': STRING,
    'grace-period': STRING,
    'log-level': STRING,
    help: HELP,
  };
  const parsed = parseFlags('controller', CONTROLLER_USAGE, run.io, options, () =>
    parseArgs({ args, options }),
  );
  if (parsed === undefined) return Promise.resolve(2);
  const { values } = parsed;
  if (values.help === true) return help(run.io, CONTROLLER_USAGE);
  const flags = {
    config: values.config,
    listen: values.listen,
    tunnelListen: values['tunnel-listen'],
    adminListen: values['admin-listen'],
    data: values.data,
    store: values.store,
    peerListen: values['peer-listen'],
    peerAdvertise: values['peer-advertise'],
    gracePeriod: values['grace-period'],
    logLevel: values['log-level'],
  };
  return serve(
    'controller',
    run,
    (): ControllerConfig => loadControllerConfig({ flags, env: run.env }),
    async (config, logger) => (await import('../controller/controller.js')).startController(config, logger),
  );
}

function agentCommand(args: string[], run: Run): Promise<number> {
  const options = {
    controller: STRING,
    token: STRING,
    name: STRING,
    tunnels: STRING,
    allow: { type: 'string', multiple: true },
    'health-listen': STRING,
    ca: STRING,
    servername: STRING,
    'grace-period': STRING,
    'upgrade-grace': STRING,
    'max-sockets-per-target': STRING,
    'ping-interval': STRING,
    'ping-timeout': STRING,
    'log-level': STRING,
    help: HELP,
  } as const;
  const parsed = parseFlags('agent', AGENT_USAGE, run.io, options, () => parseArgs({ args, options }));
  if (parsed === undefined) return Promise.resolve(2);
  const { values } = parsed;
  if (values.help === true) return help(run.io, AGENT_USAGE);
  const flags = {
    controller: values.controller,
    token: values.token,
    name: values.name,
    tunnels: values.tunnels,
    allow: values.allow,
    healthListen: values['health-listen'],
    ca: values.ca,
    servername: values.servername,
    gracePeriod: values['grace-period'],
    upgradeGrace: values['upgrade-grace'],
    maxSocketsPerTarget: values['max-sockets-per-target'],
    pingInterval: values['ping-interval'],
    pingTimeout: values['ping-timeout'],
    logLevel: values['log-level'],
  };
  return serve('agent', run, (): AgentConfig => loadAgentConfig({ flags, env: run.env }), startAgent);
}

interface DevConfig {
  options: DevOptions;
  logLevel: LogLevel;
}

function devCommand(args: string[], run: Run): Promise<number> {
  const options = { listen: STRING, 'admin-listen': STRING, 'log-level': STRING, help: HELP };
  const parsed = parseFlags('dev', DEV_USAGE, run.io, options, () => parseArgs({ args, options }));
  if (parsed === undefined) return Promise.resolve(2);
  const { values } = parsed;
  if (values.help === true) return help(run.io, DEV_USAGE);
  const load = (): DevConfig => {
    const listen = flagOrEnv('listen', 'listen', parseHostPort, values.listen, run.env);
    const adminListen = flagOrEnv(
      'adminListen',
      'admin-listen',
      parseOptionalHostPort,
      values['admin-listen'],
      run.env,
    );
    const logLevel = flagOrEnv('logLevel', 'log-level', parseLogLevel, values['log-level'], run.env);
    // null (`off`) turns the admin listener off; undefined keeps the default.
    const adminToken = run.env.SLUICE_ADMIN_TOKEN;
    const options: DevOptions = { ...(listen && { listen }), ...(adminToken ? { adminToken } : {}) };
    if (adminListen !== undefined) options.adminListen = adminListen as HostPort | null;
    return { options, logLevel: logLevel ?? 'info' };
  };
  return serve(
    'dev',
    run,
    load,
    async (config: DevConfig, logger) => (await import('../dev/dev.js')).startDev(config.options, logger),
    announceDev,
  );
}

// stdout carries JSON lines for machines; the addresses to open are repeated on stderr for people.
function announceDev(dev: DevHandle, io: Io): void {
  const admin =
    dev.adminUrl === null
      ? ''
      : `\n  dashboard  ${dev.adminUrl}/ (admin API under /api/)\n  admin token (SLUICE_ADMIN_TOKEN) ${dev.adminToken}`;
  io.err(`sluice dev is running:\n  demo       ${dev.demoUrl}${admin}\nPress Ctrl-C to stop.\n`);
}

/** The parsed flags, or undefined after printing the parser's complaint and the usage. */
function parseFlags<T>(
  command: string,
  usage: string,
  io: Io,
  options: object,
  parse: () => T,
): T | undefined {
  try {
    return parse();
  } catch (err) {
    io.err(`sluice ${command}: ${flagProblem(err, Object.keys(options))}\n\n${usage}`);
    return undefined;
  }
}

function help(io: Io, usage: string): Promise<number> {
  io.out(usage);
  return Promise.resolve(0);
}

interface Service {
  close(): Promise<void>;
}

/**
 * Loads the config, starts the service and runs it until the run's signal (or SIGINT/SIGTERM), then
 * closes it; `announce` may tell people where it is once it is up. Exit codes (docs/configuration.md "Exit codes"):
 * 0 after a clean close; 2 when it could not start because of what it was given (a ConfigError: a bad
 * value, a file or an address that cannot be used); 1 when closing failed, or starting failed for any
 * other reason.
 */
export async function serve<C extends { logLevel: LogLevel }, S extends Service>(
  command: string,
  run: Run,
  load: () => C,
  start: (config: C, logger: Logger) => Promise<S>,
  announce?: (service: S, io: Io) => void,
): Promise<number> {
  const { io } = run;
  let config: C;
  try {
    config = load();
  } catch (err) {
    return failed(io, command, err);
  }
  const lines = batchedLines(io);
  const logger = pino(
    {
      level: config.logLevel,
      base: { pid: process.pid },
      redact: { paths: ['token', '*.token'], censor: MASKED },
    },
    lines,
  );
  // Wired before starting, so that a signal during startup stops the service as soon as it is up.
  const shutdown = run.signal === undefined ? processSignals(io) : { signal: run.signal, dispose: () => {} };
  try {
    let service: S;
    try {
      service = await start(config, logger);
    } catch (err) {
      return failed(io, command, err);
    }
    announce?.(service, io);
    await aborted(shutdown.signal);
    logger.info({ reason: String(shutdown.signal.reason) }, 'shutting down');
    try {
      await service.close();
    } catch (err) {
      return failed(io, command, err);
    }
    return 0;
  } finally {
    shutdown.dispose();
    lines.flush();
  }
}

/**
 * Log lines gathered over one turn of the event loop and written together: at thousands of requests a
 * second, one stdout write per line costs more than the proxying. A line is out by the next turn, so
 * readiness lines are still seen at once.
 */
function batchedLines(io: Io): { write(line: string): void; flush(): void } {
  let pending: string[] = [];
  let scheduled = false;
  const flush = (): void => {
    scheduled = false;
    if (pending.length === 0) return;
    const text = pending.join('');
    pending = [];
    io.out(text);
  };
  return {
    write(line) {
      pending.push(line);
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    },
    flush,
  };
}

function failed(io: Io, command: string, err: unknown): number {
  io.err(`sluice ${command}: ${err instanceof Error ? err.message : String(err)}\n`);
  return err instanceof ConfigError ? 2 : 1;
}

function aborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}

/** Aborts on the first SIGINT or SIGTERM; a second one exits at once, without waiting for the drain. */
function processSignals(io: Io): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const onSignal = (name: NodeJS.Signals): void => {
    if (!controller.signal.aborted) {
      controller.abort(name);
      return;
    }
    io.err(`sluice: ${name} again, exiting without waiting for the drain\n`);
    process.exit(name === 'SIGINT' ? 130 : 143);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    signal: controller.signal,
    dispose: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}
