// Readiness lines are an interface (DESIGN §5): they appear at any log level short of silent.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ask, SluiceProcess, tempDir } from '../helpers/sluice-procs.js';

const CONTROLLER = [
  'controller',
  '--listen',
  '127.0.0.1:0',
  '--tunnel-listen',
  '127.0.0.1:0',
  '--admin-listen',
  'off',
];

test('at --log-level warn the listening lines still appear, request lines do not', async () => {
  const proc = new SluiceProcess([...CONTROLLER, '--data', tempDir(), '--log-level', 'warn']);
  try {
    const pub = await proc.waitLine(
      'public listener',
      (l) => l.event === 'listening' && l.listener === 'public',
    );
    await proc.waitLine('tunnel listener', (l) => l.event === 'listening' && l.listener === 'tunnel');
    const r = await ask({ port: Number(new URL(String(pub.url)).port), host: 'nobody.test' });
    assert.equal(r.status, 404);
    assert.equal(await proc.stop(), 0);
    assert.equal(proc.lines.filter((l) => l.msg === 'request').length, 0, 'a 404 is an info line');
  } finally {
    await proc.stop();
  }
});
