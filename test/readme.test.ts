// The README is part of the interface: its config example must load, and the flags it lists must be
// the ones the CLI accepts.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { loadControllerConfig } from '../src/controller/config.js';
import { main } from '../src/cli/main.js';

const README = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

function yamlBlocks(markdown: string): string[] {
  return [...markdown.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]!);
}

test("the README's controller config example loads as written", () => {
  const example = yamlBlocks(README).find((y) => y.includes('tunnelListen'));
  assert.ok(example !== undefined, 'the README has a controller config example');
  const text = example.replace('<64 hex digits>', 'a'.repeat(64));
  const config = loadControllerConfig({ flags: { config: 'README.yaml' }, env: {}, readFile: () => text });
  assert.equal(config.routes.length, 3);
  assert.equal(config.http.responseTimeoutMs, 60_000);
  assert.equal(config.tunnel.pingInterval, 15_000);
});

test('every flag in the README tables is accepted by its command', async () => {
  for (const command of ['controller', 'agent']) {
    const table = README.split(`| ${command} flag |`)[1]?.split('\n\n')[0] ?? '';
    const flags = [...table.matchAll(/^\| `(--[a-z-]+)/gm)].map((m) => m[1]!);
    assert.ok(flags.length >= 5, `${command}: flags found in the README`);
    let usage = '';
    const code = await main([command, '--help'], { out: (t) => (usage += t), err: (t) => (usage += t) });
    assert.equal(code, 0);
    for (const flag of flags) assert.match(usage, new RegExp(`${flag}\\b`), `${command} ${flag}`);
  }
});
