// The agent's config loader: defaults, precedence (flag > SLUICE_*), and every refusal with the exact key
// at fault. The token never appears in an error message or in the serialized config.
import assert from 'node:assert/strict';
import { hostname } from 'node:os';
import { describe, test } from 'node:test';
import { type AgentConfig, type AgentFlags, loadAgentConfig } from '../../src/agent/config.js';
import { ConfigError } from '../../src/errors.js';
import { DEFAULT_SESSION_OPTIONS } from '../../src/tunnel/options.js';

const TOKEN = 'agent-token-0123456789abcdef';
const REQUIRED: AgentFlags = { controller: 'tls://sluice.example.com:7000', token: TOKEN };

function load(flags: AgentFlags = {}, env: NodeJS.ProcessEnv = {}): AgentConfig {
  return loadAgentConfig({ flags: { ...REQUIRED, ...flags }, env });
}

/** Asserts a ConfigError for exactly `key`, matching `pattern`, that never shows the token. */
function refuses(
  run: () => unknown,
  key: string,
  pattern: RegExp,
  code = 'SLUICE_ERR_INVALID_OPTION',
  secret = TOKEN,
): void {
  assert.throws(run, (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    assert.equal(err.key, key);
    assert.ok(err.message.startsWith(`${key} `), err.message);
    assert.match(err.message, pattern);
    assert.equal(err.code, code);
    assert.ok(!err.message.includes(secret), `the message shows the token: ${err.message}`);
    return true;
  });
}

describe('loadAgentConfig: defaults', () => {
  test('with only the controller and the token', () => {
    const config = load();
    assert.deepEqual(config.controllers, ['tls://sluice.example.com:7000']);
    assert.equal(config.token, TOKEN);
    assert.equal(config.name, hostname());
    assert.match(config.replica, /^[0-9a-f]{8}$/);
    assert.equal(config.tunnels, 2);
    assert.deepEqual(config.allow, []);
    assert.equal(config.healthListen, null);
    assert.equal(config.connectTimeoutMs, 10_000);
    assert.deepEqual(config.tunnel, DEFAULT_SESSION_OPTIONS);
    assert.equal(config.logLevel, 'info');
    assert.equal('ca' in config, false);
    assert.equal('servername' in config, false);
  });

  test('each load gets its own replica id', () => {
    assert.notEqual(load().replica, load().replica);
  });

  test('the result is frozen all the way down', () => {
    const config = load({ allow: ['127.0.0.1:3000'], healthListen: '127.0.0.1:0' });
    for (const part of [config, config.allow, config.healthListen, config.tunnel])
      assert.ok(Object.isFrozen(part));
  });

  test('the controller URL is normalized with its port', () => {
    assert.deepEqual(load({ controller: 'ws://c.example/tunnel' }).controllers, ['ws://c.example:80/tunnel']);
    assert.deepEqual(load({ controller: 'wss://c.example' }).controllers, ['wss://c.example:443/']);
    assert.deepEqual(load({ controller: 'tcp://[::1]:7000' }).controllers, ['tcp://[::1]:7000']);
  });

  test('several controllers: repeated flags or a comma-separated variable, in order, each normalized', () => {
    assert.deepEqual(load({ controller: ['tcp://a.example:7000', 'wss://b.example'] }).controllers, [
      'tcp://a.example:7000',
      'wss://b.example:443/',
    ]);
    const fromEnv = loadAgentConfig({
      flags: { token: TOKEN },
      env: { SLUICE_CONTROLLER: 'tcp://a.example:7000, tcp://b.example:7000,tcp://c.example:7000' },
    });
    assert.deepEqual(fromEnv.controllers, [
      'tcp://a.example:7000',
      'tcp://b.example:7000',
      'tcp://c.example:7000',
    ]);
    // The flags win over the variable, all of them together.
    const both = loadAgentConfig({
      flags: { token: TOKEN, controller: ['tcp://f.example:7000'] },
      env: { SLUICE_CONTROLLER: 'tcp://a.example:7000,tcp://b.example:7000' },
    });
    assert.deepEqual(both.controllers, ['tcp://f.example:7000']);
  });

  test('several controllers: a bad second one, a repeat and too many are refused by position', () => {
    assert.throws(
      () => load({ controller: ['tcp://a.example:7000', 'http://b.example'] }),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.key === 'controller' &&
        /^controller URL 2 is not usable: .*unsupported scheme http:/.test(err.message) &&
        /from --controller/.test(err.message),
    );
    assert.throws(
      () => load({ controller: ['tcp://a.example:7000', 'tcp://a.example:7000'] }),
      /controller names "tcp:\/\/a.example:7000" twice/,
    );
    const many = Array.from({ length: 17 }, (_, i) => `tcp://c${i}.example:7000`);
    assert.throws(() => load({ controller: many }), /at most 16 URLs, got 17/);
    assert.throws(
      () =>
        loadAgentConfig({ flags: { token: TOKEN }, env: { SLUICE_CONTROLLER: 'tcp://a.example:7000,,' } }),
      /controller URL 2 .*\(from SLUICE_CONTROLLER\)/,
    );
  });

  test('serializing the config masks the token', () => {
    const config = load();
    assert.ok(!JSON.stringify(config).includes(TOKEN));
    assert.match(JSON.stringify(config), /"token":"\*\*\*"/);
    assert.equal({ ...config }.token, TOKEN);
  });
});

describe('loadAgentConfig: flags and environment', () => {
  const env = {
    SLUICE_CONTROLLER: 'tcp://env.example:7000',
    SLUICE_TOKEN: 'env-token-0123456789abcdef',
    SLUICE_NAME: 'env-name',
    SLUICE_TUNNELS: '3',
    SLUICE_ALLOW: '127.0.0.1:3000, *.svc:80,',
    SLUICE_HEALTH_LISTEN: '127.0.0.1:9100',
    SLUICE_CA: 'env-ca.pem',
    SLUICE_SERVERNAME: 'env.example',
    SLUICE_LOG_LEVEL: 'warn',
  };

  test('every setting comes from its SLUICE_* variable', () => {
    const config = loadAgentConfig({ flags: {}, env });
    assert.deepEqual(config.controllers, ['tcp://env.example:7000']);
    assert.equal(config.token, 'env-token-0123456789abcdef');
    assert.equal(config.name, 'env-name');
    assert.equal(config.tunnels, 3);
    assert.deepEqual(config.allow, ['127.0.0.1:3000', '*.svc:80']);
    assert.deepEqual(config.healthListen, { host: '127.0.0.1', port: 9100 });
    assert.equal(config.ca, 'env-ca.pem');
    assert.equal(config.servername, 'env.example');
    assert.equal(config.logLevel, 'warn');
  });

  test('flags override the environment', () => {
    const flags: AgentFlags = {
      controller: 'tcp://flag.example:7000',
      token: TOKEN,
      name: 'flag-name',
      tunnels: '16',
      allow: ['[::1]:8080', '*:*'],
      healthListen: 'off',
      ca: 'flag-ca.pem',
      servername: 'flag.example',
      logLevel: 'trace',
    };
    const config = loadAgentConfig({ flags, env });
    assert.deepEqual(config.controllers, ['tcp://flag.example:7000']);
    assert.equal(config.token, TOKEN);
    assert.equal(config.name, 'flag-name');
    assert.equal(config.tunnels, 16);
    assert.deepEqual(config.allow, ['[::1]:8080', '*:*']);
    assert.equal(config.healthListen, null);
    assert.equal(config.ca, 'flag-ca.pem');
    assert.equal(config.servername, 'flag.example');
    assert.equal(config.logLevel, 'trace');
  });

  test('no --allow flag leaves SLUICE_ALLOW in force; an empty one means the defaults', () => {
    assert.deepEqual(load({ allow: [] }, { SLUICE_ALLOW: '127.0.0.1:1' }).allow, ['127.0.0.1:1']);
    assert.deepEqual(load({}, { SLUICE_ALLOW: '' }).allow, []);
    assert.deepEqual(load({}, { SLUICE_ALLOW: ' , ' }).allow, []);
  });
});

describe('loadAgentConfig: refusals', () => {
  test('the controller is required', () => {
    refuses(
      () => loadAgentConfig({ flags: { token: TOKEN }, env: { SLUICE_CONTROLLER: '' } }),
      'controller',
      /^controller is required: pass --controller URL or set SLUICE_CONTROLLER$/,
    );
  });

  test('the token is required', () => {
    refuses(
      () => loadAgentConfig({ flags: { controller: 'tcp://c:1' }, env: {} }),
      'token',
      /^token is required: pass --token TOKEN or set SLUICE_TOKEN$/,
    );
  });

  test('a bad controller URL is an invalid URL under `controller`', () => {
    const bad = (controller: string, pattern: RegExp, code = 'SLUICE_ERR_INVALID_URL') =>
      refuses(() => load({ controller }), 'controller', pattern, code);
    bad('http://c.example:7000', /is not usable: .*unsupported scheme http:.*\(from --controller\)$/);
    bad('tcp://c.example', /has no port/);
    bad(
      'c.example:7000',
      /must be a tcp:\/\/, tls:\/\/, ws:\/\/ or wss:\/\/ URL.*, got "c\.example:7000"/,
      'SLUICE_ERR_INVALID_OPTION',
    );
    bad('tcp://c.example:0', /must name a port other than 0/, 'SLUICE_ERR_INVALID_OPTION');
    bad('', /must be a tcp:\/\/.*, got "" \(from --controller\)$/, 'SLUICE_ERR_INVALID_OPTION');
    refuses(
      () => loadAgentConfig({ flags: { token: TOKEN }, env: { SLUICE_CONTROLLER: 'ftp://x:1' } }),
      'controller',
      /\(from SLUICE_CONTROLLER\)$/,
      'SLUICE_ERR_INVALID_URL',
    );
  });

  test('credentials in a controller URL are not shown', () => {
    refuses(
      () => load({ controller: 'user:hunter2hunter2@c.example:7000' }),
      'controller',
      /got "\*\*\*@c\.example:7000"/,
      'SLUICE_ERR_INVALID_OPTION',
      'hunter2',
    );
    refuses(
      () => load({ controller: 'tcp://user:hunter2@c.example:7000' }),
      'controller',
      /must not carry credentials/,
      'SLUICE_ERR_INVALID_URL',
      'hunter2',
    );
  });

  test('the token never appears in an error, even one about another key', () => {
    refuses(
      () => load({ controller: `tcp://c.example:7000?t=${TOKEN}` }),
      'controller',
      /must not have a query/,
      'SLUICE_ERR_INVALID_URL',
    );
    refuses(() => load({ name: TOKEN.replaceAll('-', ' ') + TOKEN }), 'name', /must be 1 to 253 letters/);
  });

  test('a bad token says what is wrong without showing it', () => {
    const bad = (token: string, pattern: RegExp, from = '--token') =>
      refuses(
        () => load({ token }),
        'token',
        new RegExp(`${pattern.source}.*\\(from ${from}\\)$`),
        undefined,
        token,
      );
    bad(
      'short-secret',
      /must be at least 16 visible ASCII characters, without spaces \(the value is not shown\)/,
    );
    bad(`${TOKEN}\n`, /has leading or trailing whitespace/);
    bad('has spaces in the middle of it', /must be at least 16 visible ASCII characters, without spaces/);
    bad(`sha256:${'ab'.repeat(32)}`, /is a digest \(sha256:\.\.\.\); the agent needs the plain token/);
    refuses(
      () => loadAgentConfig({ flags: { controller: 'tcp://c:1' }, env: { SLUICE_TOKEN: 'tiny' } }),
      'token',
      /\(from SLUICE_TOKEN\)$/,
      undefined,
      'tiny',
    );
  });

  test('a bad --allow pattern names its index and source', () => {
    refuses(
      () => load({ allow: ['127.0.0.1:3000', 'no-port'] }),
      'allow[1]',
      /must be host:port with \* wildcards, got "no-port" \(from --allow\)$/,
    );
    refuses(
      () => load({}, { SLUICE_ALLOW: '*.svc:*,10.0.0.1:99999' }),
      'allow[1]',
      /got "10\.0\.0\.1:99999" \(from SLUICE_ALLOW\)$/,
    );
  });

  test('tunnels must be an integer from 1 to 16', () => {
    for (const tunnels of ['0', '17', 'two', '1.5', '', '-1', '0x2']) {
      refuses(
        () => load({ tunnels }),
        'tunnels',
        /must be an integer from 1 to 16, got .* \(from --tunnels\)$/,
      );
    }
    refuses(() => load({}, { SLUICE_TUNNELS: '100' }), 'tunnels', /got "100" \(from SLUICE_TUNNELS\)$/);
  });

  test('a bad health address, name, log level, CA or servername', () => {
    refuses(
      () => load({ healthListen: '9100' }),
      'healthListen',
      /must be host:port .* or "off", got "9100" \(from --health-listen\)$/,
    );
    refuses(() => load({ name: 'has space' }), 'name', /got "has space" \(from --name\)$/);
    refuses(() => load({ name: '-x' }), 'name', /starting and ending with a letter or digit/);
    refuses(() => load({ logLevel: 'chatty' }), 'logLevel', /must be one of fatal, .*, got "chatty"/);
    refuses(() => load({ ca: '' }), 'ca', /must be a PEM file path, got ""/);
    refuses(() => load({ servername: '' }), 'servername', /must be a host name, got ""/);
  });
});

describe('loadAgentConfig: tunnel timing', () => {
  test('ping interval, ping timeout and grace period from flags or SLUICE_*', () => {
    const flags = load({ pingInterval: '500ms', pingTimeout: '2s', gracePeriod: '1m' }).tunnel;
    assert.deepEqual([flags.pingInterval, flags.pingTimeout, flags.gracePeriod], [500, 2_000, 60_000]);
    const env = load(
      {},
      { SLUICE_PING_INTERVAL: '5s', SLUICE_PING_TIMEOUT: '20s', SLUICE_GRACE_PERIOD: '0' },
    ).tunnel;
    assert.deepEqual([env.pingInterval, env.pingTimeout, env.gracePeriod], [5_000, 20_000, 0]);
    assert.equal(load({ gracePeriod: '10s' }, { SLUICE_GRACE_PERIOD: '1s' }).tunnel.gracePeriod, 10_000);
  });

  test('a ping interval alone keeps the timeout at three intervals', () => {
    assert.equal(load({ pingInterval: '500ms' }).tunnel.pingTimeout, 1_500);
    assert.equal(load({ pingInterval: '1m' }).tunnel.pingTimeout, 180_000);
    assert.equal(load({ pingTimeout: '1m' }).tunnel.pingInterval, DEFAULT_SESSION_OPTIONS.pingInterval);
  });

  test('bad durations name the option and the source', () => {
    refuses(
      () => load({ pingInterval: 'soon' }),
      'tunnel.pingInterval',
      /must be a duration: .*, got "soon" \(from --ping-interval\)$/,
    );
    refuses(
      () => load({}, { SLUICE_PING_INTERVAL: '10ms' }),
      'tunnel.pingInterval',
      /must be between 100ms and 5m, got "10ms" \(from SLUICE_PING_INTERVAL\)$/,
    );
    refuses(() => load({ gracePeriod: '2h' }), 'tunnel.gracePeriod', /between 0ms and 1h, got "2h"/);
    refuses(
      () => load({ pingInterval: '10s', pingTimeout: '5s' }),
      'tunnel.pingTimeout',
      /must be at least tunnel.pingInterval/,
    );
  });
});

describe('loadAgentConfig: target pool and upgrade drain', () => {
  test('defaults: 256 sockets per target, upgrades get 5 s of a drain', () => {
    const config = load();
    assert.equal(config.maxSocketsPerTarget, 256);
    assert.equal(config.upgradeGraceMs, 5_000);
  });

  test('from flags or SLUICE_*, the flag winning', () => {
    assert.equal(load({ maxSocketsPerTarget: '2' }).maxSocketsPerTarget, 2);
    assert.equal(load({}, { SLUICE_MAX_SOCKETS_PER_TARGET: '1000' }).maxSocketsPerTarget, 1000);
    assert.equal(
      load({ maxSocketsPerTarget: '8' }, { SLUICE_MAX_SOCKETS_PER_TARGET: '9' }).maxSocketsPerTarget,
      8,
    );
    assert.equal(load({ upgradeGrace: '500ms' }).upgradeGraceMs, 500);
    assert.equal(load({}, { SLUICE_UPGRADE_GRACE: '0' }).upgradeGraceMs, 0);
    assert.equal(load({ upgradeGrace: '1m' }, { SLUICE_UPGRADE_GRACE: '1s' }).upgradeGraceMs, 60_000);
  });

  test('bad values name the option and the source', () => {
    for (const bad of ['0', '-1', '1.5', 'many', '100001']) {
      refuses(
        () => load({ maxSocketsPerTarget: bad }),
        'maxSocketsPerTarget',
        /must be an integer from 1 to 100000, got .* \(from --max-sockets-per-target\)$/,
      );
    }
    refuses(
      () => load({}, { SLUICE_UPGRADE_GRACE: 'soon' }),
      'upgradeGrace',
      /must be a duration: .*, got "soon" \(from SLUICE_UPGRADE_GRACE\)$/,
    );
    refuses(() => load({ upgradeGrace: '2h' }), 'upgradeGrace', /between 0ms and 1h, got "2h"/);
  });
});
