// The thin CLI: argv in, exit code out. Commands that later issues build say so plainly rather than
// pretending; unknown commands and bad flags print usage and exit 2 (DESIGN.md §5).
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const USAGE = `Usage: sluice <command> [flags]

Commands:
  controller   run the public gateway            (coming: HTTP issue)
  agent        run an agent that dials out       (coming: HTTP issue)
  dev          controller + agent + demo locally (coming: HTTP issue)
  cluster      add | ls | rm clusters            (coming: control-plane issue)
  token        create | ls | revoke tokens       (coming: control-plane issue)
  route        add | ls | rm routes              (coming: control-plane issue)
  status       show live tunnels                 (coming: control-plane issue)

Flags:
  -h, --help      show this help
  -v, --version   print the version
`;

const COMMANDS = new Set(['controller', 'agent', 'dev', 'cluster', 'token', 'route', 'status']);

export interface Io {
  out(text: string): void;
  err(text: string): void;
}

const stdio: Io = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
};

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

export async function main(argv: readonly string[], io: Io = stdio): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    io.out(USAGE);
    return command === undefined ? 2 : 0;
  }
  if (command === '-v' || command === '--version') {
    io.out(`sluice ${version()}\n`);
    return 0;
  }
  if (!COMMANDS.has(command)) {
    io.err(`sluice: unknown command '${command}'\n\n${USAGE}`);
    return 2;
  }
  try {
    parseArgs({ args: [...rest], options: { help: { type: 'boolean', short: 'h' } }, strict: true });
  } catch (err) {
    io.err(`sluice ${command}: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  io.err(`sluice ${command} is not built yet; see the README's roadmap.\n`);
  return 1;
}
