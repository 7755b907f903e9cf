// The service lifecycle behind `sluice controller|agent|dev`, in-process: load, start, run until the
// signal, close, and the exit code of each way it can end. A fake service stands in for the real ones.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Logger } from 'pino';
import { main, serve } from '../../src/cli/main.js';
import type { Io } from '../../src/cli/run.js';
import type { LogLevel } from '../../src/config/values.js';
import { ConfigError } from '../../src/errors.js';

class Capture implements Io {
  stdout = '';
  stderr = '';
  out(text: string): void {
    this.stdout += text;
  }
  err(text: string): void {
    this.stderr += text;
  }
  lines(): Record<string, unknown>[] {
    return this.stdout
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  }
}

interface Fake {
  started: number;
  closed: number;
  logger?: Logger;
}

function fakeService(fake: Fake, closeError?: Error) {
  return async (_config: unknown, logger: Logger) => {
    fake.started++;
    fake.logger = logger;
    logger.info({ event: 'listening', url: 'http://127.0.0.1:1' }, 'ready');
    return {
      close: async () => {
        fake.closed++;
        if (closeError !== undefined) throw closeError;
      },
    };
  };
}

const config =
  (logLevel: LogLevel = 'info') =>
  () => ({ logLevel, token: 'agent-token-0123456789' });

describe('serve', () => {
  test('runs the service until the signal, then closes it and exits 0', async () => {
    const io = new Capture();
    const stop = new AbortController();
    const fake: Fake = { started: 0, closed: 0 };
    const sigterm = process.listenerCount('SIGTERM');
    const exit = serve('agent', { io, signal: stop.signal, env: {} }, config(), fakeService(fake));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(fake.started, 1);
    assert.equal(fake.closed, 0);
    stop.abort('SIGTERM');
    assert.equal(await exit, 0);
    assert.equal(fake.closed, 1);
    assert.equal(process.listenerCount('SIGTERM'), sigterm, 'an injected signal adds no process listener');
    const lines = io.lines();
    assert.deepEqual(
      lines.map((l) => l.msg),
      ['ready', 'shutting down'],
    );
    assert.equal(lines[1]!.reason, 'SIGTERM');
    for (const line of lines) {
      assert.equal(line.pid, process.pid);
      assert.equal(line.level, 30);
      assert.equal('hostname' in line, false);
    }
    assert.equal(io.stderr, '');
  });

  test('a signal during startup closes the service as soon as it is up', async () => {
    const stop = new AbortController();
    stop.abort('SIGINT');
    const fake: Fake = { started: 0, closed: 0 };
    const code = await serve(
      'dev',
      { io: new Capture(), signal: stop.signal, env: {} },
      config(),
      fakeService(fake),
    );
    assert.equal(code, 0);
    assert.deepEqual([fake.started, fake.closed], [1, 1]);
  });

  test('the log level comes from the config, and a token in a log line is masked', async () => {
    const io = new Capture();
    const stop = new AbortController();
    const fake: Fake = { started: 0, closed: 0 };
    const exit = serve('agent', { io, signal: stop.signal, env: {} }, config('warn'), fakeService(fake));
    await new Promise((resolve) => setImmediate(resolve));
    fake.logger!.warn({ config: { token: 'agent-token-0123456789' } }, 'careless');
    stop.abort('SIGTERM');
    assert.equal(await exit, 0);
    assert.deepEqual(
      io.lines().map((l) => l.msg),
      ['careless'],
    );
    assert.ok(!io.stdout.includes('agent-token-0123456789'));
  });

  test('announce runs once the service is up, before waiting for the signal', async () => {
    const io = new Capture();
    const stop = new AbortController();
    const fake: Fake = { started: 0, closed: 0 };
    const start = async (c: unknown, logger: Logger) => ({
      ...(await fakeService(fake)(c, logger)),
      url: 'u',
    });
    const exit = serve('dev', { io, signal: stop.signal, env: {} }, config(), start, (service, out) => {
      assert.equal(fake.closed, 0);
      out.err(`up at ${service.url}\n`);
    });
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(io.stderr, 'up at u\n');
    stop.abort('SIGTERM');
    assert.equal(await exit, 0);
  });

  test('a bad config exits 2 without starting anything', async () => {
    const io = new Capture();
    const fake: Fake = { started: 0, closed: 0 };
    const load = () => {
      throw new ConfigError('listen', 'must be host:port');
    };
    const code = await serve(
      'controller',
      { io, signal: new AbortController().signal, env: {} },
      load,
      fakeService(fake),
    );
    assert.equal(code, 2);
    assert.equal(io.stderr, 'sluice controller: listen must be host:port\n');
    assert.equal(fake.started, 0);
    assert.equal(io.stdout, '');
  });

  test('an unexpected startup failure exits 1 with its message; a ConfigError from startup exits 2', async () => {
    const io = new Capture();
    const signal = new AbortController().signal;
    const broken = async () => {
      throw new Error('the store is corrupt');
    };
    assert.equal(await serve('controller', { io, signal, env: {} }, config(), broken), 1);
    assert.equal(io.stderr, 'sluice controller: the store is corrupt\n');
    // What the controller throws for a bad file or an address in use (test/cli/startup.test.ts).
    const badOption = async () => {
      throw new ConfigError('tunnelCert', 'cannot be read');
    };
    assert.equal(await serve('controller', { io: new Capture(), signal, env: {} }, config(), badOption), 2);
  });

  test('a failed close exits 1', async () => {
    const io = new Capture();
    const stop = new AbortController();
    stop.abort('SIGTERM');
    const fake: Fake = { started: 0, closed: 0 };
    const service = fakeService(fake, new Error('drain failed'));
    assert.equal(await serve('agent', { io, signal: stop.signal, env: {} }, config(), service), 1);
    assert.equal(io.stderr, 'sluice agent: drain failed\n');
  });
});

describe('main', () => {
  test('a command --help prints its usage to stdout and exits 0', async () => {
    for (const command of ['controller', 'agent', 'dev']) {
      const io = new Capture();
      assert.equal(await main([command, '--help'], io), 0);
      assert.match(io.stdout, new RegExp(`^Usage: sluice ${command}`));
      assert.equal(io.stderr, '');
    }
  });

  test('a bad flag prints the command usage to stderr and exits 2', async () => {
    const io = new Capture();
    assert.equal(await main(['agent', '--tunnels'], io), 2);
    assert.match(
      io.stderr,
      /^sluice agent: Option '--tunnels <value>' argument missing\n\nUsage: sluice agent/,
    );
  });

  test('an admin command with a bad flag prints its usage and exits 2', async () => {
    const io = new Capture();
    assert.equal(await main(['status', '--bogus'], io), 2);
    assert.match(io.stderr, /^sluice status: unknown flag --bogus\n[^]*Usage: sluice status/);
  });
});
