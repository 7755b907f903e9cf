// The README and docs/configuration.md are part of the interface: their config examples must load, the
// keys they list must be the ones the loader knows with the defaults it applies, and the flags they list
// must be the ones the CLI accepts. The README stays a front page, small enough to read.
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { test } from 'node:test';
import {
  DEFAULT_HTTP_OPTIONS,
  loadControllerConfig,
  type ControllerConfig,
} from '../src/controller/config.js';
import { main } from '../src/cli/main.js';
import { DEFAULT_SESSION_OPTIONS } from '../src/tunnel/options.js';
import { plain, tableInSection } from './helpers/markdown.js';

const README_URL = new URL('../../README.md', import.meta.url);
const README = readFileSync(README_URL, 'utf8');
const CONFIGURATION = readFileSync(new URL('../../docs/configuration.md', import.meta.url), 'utf8');
const ADMIN = readFileSync(new URL('../../docs/admin.md', import.meta.url), 'utf8');

/** The README is a front page; the manual is docs/ (issue 12). */
const README_MAX_BYTES = 12 * 1024;

function yamlBlocks(markdown: string): string[] {
  return [...markdown.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]!);
}

function loadExample(markdown: string): ControllerConfig {
  const example = yamlBlocks(markdown).find((y) => y.includes('tunnelListen'));
  assert.ok(example !== undefined, 'a controller config example');
  const text = example.replace('<64 hex digits>', 'a'.repeat(64));
  return loadControllerConfig({ flags: { config: 'example.yaml' }, env: {}, readFile: () => text });
}

/** Loads a config file of `text`; the ConfigError's message when it is refused. */
function load(text: string): ControllerConfig | string {
  try {
    return loadControllerConfig({ flags: { config: 'test.yaml' }, env: {}, readFile: () => text });
  } catch (err) {
    return (err as Error).message;
  }
}

/** The keys the loader names when refusing an unknown one under `section` ('' for the top level). */
function knownKeys(section: string): string[] {
  const text = section === '' ? 'bogusKey: 1\n' : `${section}:\n  bogusKey: 1\n`;
  const message = load(text);
  assert.equal(typeof message, 'string', `an unknown key under "${section}" is refused`);
  const known = /known: ([^)]*)\)/.exec(message as string);
  assert.ok(known !== null, `the refusal lists the known keys: ${String(message)}`);
  return known[1]!.split(', ');
}

/** The first inline-code value of a cell: "`4194304` (4 MiB)" → "4194304". */
function firstCode(cell: string): string {
  const match = /`([^`]*)`/.exec(cell);
  assert.ok(match !== null, `a value in backticks in "${cell}"`);
  return match[1]!;
}

/** A value as YAML writes it: digits become a number, anything else a string. */
/** A documented default as YAML: numbers, booleans and lists as they are, anything else quoted. */
function yamlValue(text: string): string {
  return /^(\d+|true|false|\[.*\])$/.test(text) ? text : JSON.stringify(text);
}

test('the README is at most 12 KiB', () => {
  const size = statSync(README_URL).size;
  assert.ok(size <= README_MAX_BYTES, `README.md is ${size} bytes, over ${README_MAX_BYTES}`);
});

test("the README's controller config example loads as written", () => {
  const config = loadExample(README);
  assert.equal(config.routes.length, 1);
  assert.equal(config.clusters[0]?.name, 'shop');
  assert.equal(config.listen.port, 8080);
});

test("docs/configuration.md's controller config example loads as written", () => {
  const config = loadExample(CONFIGURATION);
  assert.equal(config.routes.length, 3);
  assert.equal(config.http.responseTimeoutMs, 60_000);
  assert.equal(config.tunnel.pingInterval, 15_000);
});

test('docs/configuration.md lists every top-level key of the config file', () => {
  const table = tableInSection(CONFIGURATION, 'The config file', ['key', 'default', 'meaning']);
  const documented = new Set(
    table.rows.flatMap((row) => [...row[0]!.matchAll(/`([A-Za-z]+)/g)].map((m) => m[1]!)),
  );
  assert.deepEqual([...documented].sort(), knownKeys('').sort());
});

test('docs/configuration.md lists every http.* key with the default the loader applies', () => {
  const table = tableInSection(CONFIGURATION, '`http.*`', ['http key', 'default', 'meaning']);
  const keys = table.rows.map((row) => plain(row[0]!));
  assert.deepEqual([...keys].sort(), knownKeys('http').sort());
  for (const row of table.rows) {
    const key = plain(row[0]!);
    const config = load(`http:\n  ${key}: ${yamlValue(firstCode(row[1]!))}\n`);
    assert.notEqual(typeof config, 'string', `http.${key}: the documented default loads (${String(config)})`);
    const field = (key in DEFAULT_HTTP_OPTIONS ? key : `${key}Ms`) as keyof typeof DEFAULT_HTTP_OPTIONS;
    assert.deepEqual((config as ControllerConfig).http[field], DEFAULT_HTTP_OPTIONS[field], `http.${key}`);
  }
});

test('docs/configuration.md lists every tunnel.* key with the default the loader applies', () => {
  const table = tableInSection(CONFIGURATION, '`tunnel.*`', ['tunnel key', 'default', 'meaning']);
  const keys = table.rows.map((row) => plain(row[0]!));
  assert.deepEqual([...keys].sort(), Object.keys(DEFAULT_SESSION_OPTIONS).sort());
  for (const row of table.rows) {
    const key = plain(row[0]!) as keyof typeof DEFAULT_SESSION_OPTIONS;
    const config = load(`tunnel:\n  ${key}: ${yamlValue(firstCode(row[1]!))}\n`);
    assert.notEqual(
      typeof config,
      'string',
      `tunnel.${key}: the documented default loads (${String(config)})`,
    );
    assert.equal((config as ControllerConfig).tunnel[key], DEFAULT_SESSION_OPTIONS[key], `tunnel.${key}`);
  }
});

async function usageOf(args: string[]): Promise<string> {
  let usage = '';
  const code = await main(args, { out: (t) => (usage += t), err: (t) => (usage += t) });
  assert.equal(code, 0, `${args.join(' ')} exits 0`);
  return usage;
}

/** Checks each row's flag and environment variable against the command's usage text. */
function checkFlagTable(usage: string, rows: readonly (readonly string[])[], what: string): void {
  const flags = rows.map((row) => /^`(--[a-z-]+)/.exec(row[0]!)?.[1]);
  assert.ok(flags.length >= 3, `${what}: flags found`);
  rows.forEach((row, i) => {
    const flag = flags[i];
    assert.ok(flag !== undefined, `${what}: row ${i} names a flag`);
    assert.match(usage, new RegExp(`${flag}\\b`), `${what} ${flag}`);
    const env = /`(SLUICE_[A-Z_]+)`/.exec(row[1]!)?.[1];
    if (env !== undefined) assert.ok(usage.includes(`$${env}`), `${what} ${flag}: usage names $${env}`);
  });
}

test('every flag in the docs/configuration.md tables is accepted by its command', async () => {
  const sections = { controller: 'The controller', agent: 'The agent', dev: '`sluice dev`' };
  for (const [command, section] of Object.entries(sections)) {
    const table = tableInSection(CONFIGURATION, section, [`${command} flag`, 'environment', 'default']);
    checkFlagTable(await usageOf([command, '--help']), table.rows, command);
  }
});

test('every flag in the docs/admin.md table is accepted by the admin commands', async () => {
  const table = tableInSection(ADMIN, 'CLI', ['admin command flag', 'environment', 'default']);
  for (const command of ['cluster', 'token', 'route', 'status']) {
    checkFlagTable(await usageOf([command, '--help']), table.rows, command);
  }
});
