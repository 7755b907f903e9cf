// Each command-line flag is declared once, in its command's table: its name, its SLUICE_* variable,
// the config key its errors name, its parser, its default and its help. From one table come the
// command's usage text, its node:util parseArgs spec and the flags object its config loader reads, so
// a new flag touches one place. The loaders (controller/config.ts, agent/config.ts) read a flag with
// `readFlag`, which applies flag < environment precedence and names the flag or variable at fault.
import { flagOrEnv, parseLogLevel, type Refusal } from './values.js';

export interface Flag<K extends string = string, T = unknown, M extends boolean = boolean> {
  /** The long name, as typed after `--`. */
  readonly name: string;
  /** The key of the flags object the loader reads (camelCase of the name). */
  readonly key: K;
  /** The config key a bad value's ConfigError names; `key` when absent. */
  readonly configKey?: string;
  /** The value's placeholder in the usage (`ADDR`); absent for a boolean flag. */
  readonly value?: string;
  /** The flag may be given more than once; its values come as a list. */
  readonly multiple?: M;
  /** Whether a SLUICE_* variable sets it too (default true); its name comes from the flag's. */
  readonly env?: boolean;
  /** Checks and converts a value as typed. */
  readonly parse?: (value: unknown) => T | Refusal;
  /** The command cannot run without it (from the flag or the variable); the usage says so. */
  readonly required?: boolean;
  /** The default as the usage shows it, e.g. `127.0.0.1:8080`. */
  readonly shown?: string;
  /** What the flag does, for the usage; the default and the variable are added to it. */
  readonly help: string;
}

/** Declares one flag; a function so that the key and the parsed type stay exact. */
export function flag<const K extends string, T = string, const M extends boolean = false>(
  spec: Flag<K, T, M>,
): Flag<K, T, M> {
  return spec;
}

/** --log-level, the same for every service command. */
export const LOG_LEVEL_FLAG = flag({
  name: 'log-level',
  key: 'logLevel',
  value: 'LEVEL',
  parse: parseLogLevel,
  shown: 'info',
  help: 'fatal, error, warn, info, debug, trace or silent',
});

/**
 * The flags object a table's command parses into: each flag's value as typed, by key. A repeatable
 * flag's is the list argv gave, or one value (a caller's convenience).
 */
export type FlagValues<F extends readonly Flag[]> = {
  -readonly [S in F[number] as S['key']]?: S extends Flag<string, unknown, true>
    ? string | readonly string[]
    : string;
};

/** The flag's SLUICE_* variable, or undefined when it has none. */
export function envName(spec: Flag): string | undefined {
  if (spec.env === false) return undefined;
  return `SLUICE_${spec.name.toUpperCase().replaceAll('-', '_')}`;
}

/**
 * The flag's value from the flags object or, failing that, its variable, parsed; undefined when
 * neither is set. A bad value is a ConfigError naming the config key and where it came from.
 */
export function readFlag<K extends string, T>(
  spec: Flag<K, T, boolean>,
  flags: Readonly<Partial<Record<K, string | readonly string[]>>>,
  env: NodeJS.ProcessEnv,
): T | undefined {
  if (spec.parse === undefined) throw new Error(`flag --${spec.name} has no parser`);
  const given = flags[spec.key];
  const value = Array.isArray(given) ? given.join(',') : (given as string | undefined);
  const fromEnv = spec.env === false ? {} : env;
  return flagOrEnv(spec.configKey ?? spec.key, spec.name, spec.parse, value, fromEnv);
}

type ParseArgsOption = { type: 'string' | 'boolean'; multiple?: boolean; short?: string };

/** The node:util parseArgs `options` for a table, with -h/--help. */
export function parseArgsOptions(table: readonly Flag[]): Record<string, ParseArgsOption> {
  const options: Record<string, ParseArgsOption> = {};
  for (const spec of table) {
    options[spec.name] = {
      type: spec.value === undefined ? 'boolean' : 'string',
      ...(spec.multiple === true ? { multiple: true } : {}),
    };
  }
  options.help = { type: 'boolean', short: 'h' };
  return options;
}

/** The flags object from parseArgs' `values`: each flag's value by its key. */
export function flagValues<F extends readonly Flag[]>(
  table: F,
  values: Readonly<Record<string, unknown>>,
): FlagValues<F> {
  const flags: Record<string, unknown> = {};
  for (const spec of table) {
    const value = values[spec.name];
    if (value !== undefined) flags[spec.key] = value;
  }
  return flags as FlagValues<F>;
}

/** The environment limited to the variables of a table's flags, for a command that takes only those. */
export function envOf(table: readonly Flag[], env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const only: NodeJS.ProcessEnv = {};
  for (const spec of table) {
    const name = envName(spec);
    if (name !== undefined && env[name] !== undefined) only[name] = env[name];
  }
  return only;
}

const WIDTH = 100;
const COLUMN = 25;

/**
 * The `Flags:` section of a usage text: one entry per flag, its help followed by its default and its
 * variable, wrapped under the help column; then -h, --help.
 */
export function flagsUsage(table: readonly Flag[]): string {
  const lines: string[] = [];
  for (const spec of table) {
    const head = `  --${spec.name}${spec.value === undefined ? '' : ` ${spec.value}`}`;
    const env = envName(spec);
    const notes = [spec.required === true ? 'required' : '', env === undefined ? '' : `$${env}`];
    const note = notes.filter((n) => n !== '').join(', ');
    const text = [
      spec.help,
      spec.shown === undefined ? '' : `, default ${spec.shown}`,
      note === '' ? '' : ` (${note})`,
    ].join('');
    const words = text.split(' ');
    let line = head.length < COLUMN - 1 ? head.padEnd(COLUMN) : '';
    if (line === '') lines.push(head);
    let used = false;
    for (const word of words) {
      const indent = ' '.repeat(COLUMN);
      if (line === '') line = indent;
      if (used && line.length + 1 + word.length > WIDTH) {
        lines.push(line);
        line = indent + word;
      } else {
        line += (used ? ' ' : '') + word;
      }
      used = true;
    }
    lines.push(line);
  }
  lines.push('  -h, --help'.padEnd(COLUMN) + 'show this help');
  return `Flags:\n${lines.join('\n')}\n`;
}
