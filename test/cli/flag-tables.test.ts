// Each flag is declared once, in its command's table (config/flags.ts), and everything else follows
// from the table: the usage names every flag and its variable, argv accepts every flag, a bad value
// from the flag or from its variable is a ConfigError naming the config key and where it came from,
// and dev takes the controller's own rules for the flags it shares with it.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { AGENT_FLAGS, loadAgentConfig } from '../../src/agent/config.js';
import { main } from '../../src/cli/main.js';
import type { Io } from '../../src/cli/run.js';
import { envName, type Flag, flagsUsage } from '../../src/config/flags.js';
import { Refusal } from '../../src/config/values.js';
import { CONTROLLER_FLAGS, loadControllerConfig } from '../../src/controller/config.js';
import { DEV_FLAGS, loadDevConfig } from '../../src/dev/config.js';
import { ConfigError } from '../../src/errors.js';

const TOKEN = 'agent-token-0123456789abcdef';
// A value the flag's parser refuses: a NUL byte is never a valid address, URL, name or number; a
// path or a name that only has to be non-empty is refused empty (from the flag: an empty variable is
// unset, as shells and manifests leave them).
function badValue(spec: Flag): string {
  return spec.parse!('bad\u0000value') instanceof Refusal ? 'bad\u0000value' : '';
}

function capture(): Io & { stdout: string; stderr: string } {
  const io = {
    stdout: '',
    stderr: '',
    out: (text: string) => void (io.stdout += text),
    err: (text: string) => void (io.stderr += text),
  };
  return io;
}

async function usage(command: string): Promise<string> {
  const io = capture();
  assert.equal(await main([command, '--help'], io), 0);
  return io.stdout;
}

const tables: [string, readonly Flag[], (flags: object, env: NodeJS.ProcessEnv) => unknown][] = [
  ['controller', CONTROLLER_FLAGS, (flags, env) => loadControllerConfig({ flags, env, readFile: () => '' })],
  [
    'agent',
    AGENT_FLAGS,
    (flags, env) =>
      loadAgentConfig({ flags: { ...(env.SLUICE_TOKEN === undefined && { token: TOKEN }), ...flags }, env }),
  ],
  ['dev', DEV_FLAGS, (flags, env) => loadDevConfig(flags, env)],
];

for (const [command, table, load] of tables) {
  describe(`sluice ${command}: the flag table`, () => {
    test('the usage lists every flag, its placeholder and its variable, in table order', async () => {
      const text = await usage(command);
      let at = 0;
      for (const spec of table) {
        const head = `--${spec.name}${spec.value === undefined ? '' : ` ${spec.value}`}`;
        const found = text.indexOf(head, at);
        assert.ok(found >= at, `${head} in order in:\n${text}`);
        at = found;
        const env = envName(spec);
        if (env !== undefined) assert.ok(text.includes(`$${env}`), `$${env}`);
      }
      assert.ok(text.endsWith(flagsUsage(table)));
    });

    test('docs/configuration.md has a row for every flag, with its variable', () => {
      const docs = readFileSync(new URL('../../../docs/configuration.md', import.meta.url), 'utf8');
      for (const spec of table) {
        const row = docs.split('\n').find((line) => line.startsWith(`| \`--${spec.name}`));
        assert.ok(row !== undefined, `docs/configuration.md has no row for --${spec.name}`);
        const env = envName(spec);
        if (env !== undefined) assert.ok(row.includes(env), `the row of --${spec.name} names ${env}`);
      }
    });

    test('no two flags share a name, a key or a variable', () => {
      for (const field of ['name', 'key'] as const) {
        const seen = table.map((spec) => spec[field]);
        assert.equal(new Set(seen).size, seen.length, `${field}s: ${seen.join(' ')}`);
      }
    });

    for (const spec of table.filter((s) => s.parse !== undefined)) {
      const key = spec.configKey ?? spec.key;
      test(`--${spec.name}: a bad value from the flag or from $${envName(spec)} names ${key} and its source`, () => {
        const flags =
          command === 'agent' && spec.key !== 'controller' ? { controller: 'tcp://127.0.0.1:7000' } : {};
        assert.throws(
          () => load({ ...flags, [spec.key]: badValue(spec) }, {}),
          (err: unknown) =>
            err instanceof ConfigError && err.key === key && err.message.includes(`(from --${spec.name})`),
        );
        const env = envName(spec)!;
        if (badValue(spec) === '') return;
        assert.throws(
          () => load(flags, { [env]: badValue(spec) }),
          (err: unknown) =>
            err instanceof ConfigError && err.key === key && err.message.includes(`(from ${env})`),
        );
      });
    }
  });
}

describe('sluice dev', () => {
  test('takes the controller flags it shares by the same table entries; --data with its own help', () => {
    const shared = DEV_FLAGS.filter((spec) => CONTROLLER_FLAGS.some((c) => c.name === spec.name));
    assert.deepEqual(
      shared.map((spec) => spec.name),
      ['listen', 'admin-listen', 'data', 'log-level'],
    );
    for (const spec of shared) {
      const controller = CONTROLLER_FLAGS.find((c) => c.name === spec.name)!;
      if (spec.name !== 'data') assert.equal(spec, controller, spec.name);
      assert.deepEqual({ ...spec, help: '' }, { ...controller, help: '' }, spec.name);
    }
  });

  test('a bad --listen is the ConfigError `sluice controller` gives, before anything starts', () => {
    assert.throws(
      () => loadDevConfig({ listen: 'nowhere' }, {}),
      (err: unknown) =>
        err instanceof ConfigError && err.key === 'listen' && /\(from --listen\)/.test(err.message),
    );
  });

  test('reads its flags through the controller loader: an admin listener of off, and the log level', () => {
    const dev = loadDevConfig({ adminListen: 'off', logLevel: 'warn' }, {});
    assert.equal(dev.logLevel, 'warn');
    assert.match(dev.adminToken, /^sluadm_/);
    assert.equal(
      loadDevConfig({}, { SLUICE_ADMIN_TOKEN: 'given-admin-token-123' }).adminToken,
      'given-admin-token-123',
    );
  });

  test('a variable of a controller flag dev does not take (SLUICE_CONFIG) changes nothing', async () => {
    const io = capture();
    const saved = process.env.SLUICE_CONFIG;
    process.env.SLUICE_CONFIG = '/nonexistent/sluice.yaml';
    const stop = new AbortController();
    try {
      const running = main(
        [
          'dev',
          '--listen',
          '127.0.0.1:0',
          '--https-listen',
          'off',
          '--admin-listen',
          'off',
          '--log-level',
          'warn',
        ],
        io,
        stop.signal,
      );
      // Ready when the banner is out; a bound on the wait, never a sleep as the condition.
      const deadline = Date.now() + 30_000;
      while (!io.stderr.includes('sluice dev is running') && Date.now() < deadline) {
        const early = await Promise.race([running, new Promise((r) => setTimeout(() => r(undefined), 50))]);
        if (early !== undefined) break;
      }
      assert.match(io.stderr, /sluice dev is running/);
      stop.abort('test');
      assert.equal(await running, 0);
    } finally {
      stop.abort('test');
      if (saved === undefined) delete process.env.SLUICE_CONFIG;
      else process.env.SLUICE_CONFIG = saved;
    }
  });
});

describe('the admin commands', () => {
  test('a route-only flag on another command is an unknown flag, not silently ignored', async () => {
    const io = capture();
    assert.equal(await main(['cluster', 'ls', '--target', 'http://x:1'], io), 2);
    assert.match(io.stderr, /^sluice cluster: unknown flag --target\n\nUsage: sluice cluster/);
  });

  test('route --help lists its own flags, then the common ones', async () => {
    const text = await usage('route');
    const order = [
      '--cluster NAME',
      '--target URL',
      '--path P',
      '--admin URL',
      '--admin-token-file FILE',
      '--json',
    ];
    const at = order.map((head) => text.indexOf(head));
    assert.ok(
      at.every((i, n) => i >= 0 && (n === 0 || i > at[n - 1]!)),
      text,
    );
    assert.ok(text.includes('$SLUICE_ADMIN)'));
  });
});
