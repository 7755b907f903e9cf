// The thin CLI: argv in, exit code out (STYLE.md lesson 10). Each service command parses its flags,
// loads a validated config, starts the service from the library and runs it until SIGINT or SIGTERM.
// Bad flags print usage and exit 2 (DESIGN.md §5); so does any other reason the service cannot start
// (docs/configuration.md "Exit codes"). Commands that later issues build say so plainly rather than pretending. The
// admin commands live in admin.ts. The controller and dev are imported only when run: they load the
// SQLite store, which an agent neither needs nor may have installed.
import { parseArgs } from 'node:util';
import { pino, type Logger } from 'pino';
import { AGENT_FLAGS, type AgentConfig, loadAgentConfig } from '../agent/config.js';
import { startAgent } from '../agent/agent.js';
import { ADMIN_COMMANDS, adminCommand } from './admin.js';
import { flagProblem } from './flags.js';
import {
  envOf,
  type Flag,
  type FlagValues,
  flagsUsage,
  flagValues,
  parseArgsOptions,
} from '../config/flags.js';
import { type LogLevel, MASKED } from '../config/values.js';
import { CONTROLLER_FLAGS, type ControllerConfig, loadControllerConfig } from '../controller/config.js';
import { DEV_FLAGS, type DevConfig, loadDevConfig } from '../dev/config.js';
import type { DevHandle } from '../dev/dev.js';
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
  tcp-route    add | ls | rm TCP routes          (admin API)
  status       show live tunnels                 (admin API)

Flags:
  -h, --help      show this help
  -v, --version   print the version

Run 'sluice <command> --help' for the flags of a command.
`;

const CONTROLLER_USAGE = `Usage: sluice controller [flags]

Runs the public gateway: HTTP clients on --listen, agents on --tunnel-listen.
A flag overrides its environment variable, which overrides the config file.

${flagsUsage(CONTROLLER_FLAGS)}`;

const AGENT_USAGE = `Usage: sluice agent --controller URL --token TOKEN [flags]

Runs an agent: it dials the controller, holds tunnels open and sends each stream to its target.
A flag overrides its environment variable.

${flagsUsage(AGENT_FLAGS)}`;

const DEV_USAGE = `Usage: sluice dev [flags]

Runs a controller, an agent and a demo service on this machine, with embedded defaults.
The demo is at http://demo.localhost:PORT/ and, unless --https-listen is off, at
https://demo.localhost:PORT/ (HTTP/2) with a self-signed certificate that dev makes into --data
as dev-cert.pem and dev-key.pem, and reuses until 14 days before it expires.
A flag overrides its environment variable.

${flagsUsage(DEV_FLAGS)}`;

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

/**
 * The flags of a service command, parsed by its table; a number is the exit code to return instead
 * (after --help, or a bad flag with the usage).
 */
function commandFlags<F extends readonly Flag[]>(
  command: string,
  usage: string,
  table: F,
  args: string[],
  io: Io,
): FlagValues<F> | number {
  const options = parseArgsOptions(table);
  const parsed = parseFlags(command, usage, io, options, () => parseArgs({ args, options }));
  if (parsed === undefined) return 2;
  if (parsed.values.help === true) {
    io.out(usage);
    return 0;
  }
  return flagValues(table, parsed.values);
}

function controllerCommand(args: string[], run: Run): Promise<number> {
  const flags = commandFlags('controller', CONTROLLER_USAGE, CONTROLLER_FLAGS, args, run.io);
  if (typeof flags === 'number') return Promise.resolve(flags);
  return serve(
    'controller',
    run,
    (): ControllerConfig => loadControllerConfig({ flags, env: run.env }),
    async (config, logger) => (await import('../controller/controller.js')).startController(config, logger),
  );
}

function agentCommand(args: string[], run: Run): Promise<number> {
  const flags = commandFlags('agent', AGENT_USAGE, AGENT_FLAGS, args, run.io);
  if (typeof flags === 'number') return Promise.resolve(flags);
  return serve('agent', run, (): AgentConfig => loadAgentConfig({ flags, env: run.env }), startAgent);
}

function devCommand(args: string[], run: Run): Promise<number> {
  const flags = commandFlags('dev', DEV_USAGE, DEV_FLAGS, args, run.io);
  if (typeof flags === 'number') return Promise.resolve(flags);
  // Dev reads only its own flags' variables: SLUICE_CONFIG or SLUICE_STORE meant for a controller
  // must not change what dev runs.
  const env = { ...envOf(DEV_FLAGS, run.env), SLUICE_ADMIN_TOKEN: run.env.SLUICE_ADMIN_TOKEN };
  const load = (): DevConfig => loadDevConfig(flags, env);
  return serve(
    'dev',
    run,
    load,
    async (config: DevConfig, logger) => (await import('../dev/dev.js')).startDev(config, logger),
    announceDev,
  );
}

// stdout carries JSON lines for machines; the addresses to open are repeated on stderr for people.
function announceDev(dev: DevHandle, io: Io): void {
  const admin =
    dev.adminUrl === null
      ? ''
      : `\n  dashboard  ${dev.adminUrl}/ (admin API under /api/)\n  admin token (SLUICE_ADMIN_TOKEN) ${dev.adminToken}`;
  const https =
    dev.demoHttpsUrl === null
      ? ''
      : `\n  demo       ${dev.demoHttpsUrl} (self-signed, to trust: ${dev.certFile})`;
  io.err(`sluice dev is running:\n  demo       ${dev.demoUrl}${https}${admin}\nPress Ctrl-C to stop.\n`);
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

interface Service {
  close(): Promise<void>;
  reload?(): Promise<unknown>;
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
    // SIGHUP reloads what the service can reload (the controller's TLS certificates); else ignored.
    const reload = (): void => {
      logger.info({ event: 'sighup' }, 'SIGHUP: reloading');
      void service.reload?.();
    };
    if (run.signal === undefined) process.on('SIGHUP', reload);
    try {
      await aborted(shutdown.signal);
    } finally {
      process.off('SIGHUP', reload);
    }
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
