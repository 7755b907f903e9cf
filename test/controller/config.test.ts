// The controller's config loader: defaults, precedence (flag > SLUICE_* > YAML > default), the YAML
// shape, and every refusal with the exact key at fault (and, for the file, the line).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import {
  type ControllerConfig,
  type ControllerFlags,
  DEFAULT_HTTP_OPTIONS,
  loadControllerConfig,
} from '../../src/controller/config.js';
import { ConfigError } from '../../src/errors.js';
import { DEFAULT_SESSION_OPTIONS } from '../../src/tunnel/options.js';

const FILE = 'sluice.yaml';
const DIGEST = `sha256:${'ab'.repeat(32)}`;
const PLAIN = 'plain-token-0123456789';

interface Load {
  yaml?: string;
  flags?: ControllerFlags;
  env?: NodeJS.ProcessEnv;
}

/** Loads with `yaml` as the content of sluice.yaml (named by --config) when given. */
function load({ yaml, flags = {}, env = {} }: Load = {}): ControllerConfig {
  const withFile = yaml === undefined ? flags : { config: FILE, ...flags };
  return loadControllerConfig({
    flags: withFile,
    env,
    readFile: (path) => {
      assert.equal(path, FILE);
      return yaml ?? '';
    },
  });
}

/** Asserts that loading fails with a ConfigError for exactly `key`, its message matching `pattern`. */
function refuses(input: Load, key: string, pattern: RegExp, code = 'SLUICE_ERR_INVALID_OPTION'): ConfigError {
  let error: ConfigError | undefined;
  assert.throws(
    () => load(input),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
      assert.equal(err.key, key);
      assert.ok(err.message.startsWith(`${key} `), err.message);
      assert.match(err.message, pattern);
      assert.equal(err.code, code);
      error = err;
      return true;
    },
  );
  return error!;
}

const CLUSTERS = `clusters:
  - name: a
    tokens: ["${DIGEST}"]
  - name: b
`;

describe('loadControllerConfig: defaults', () => {
  test('with no file, flags or environment', () => {
    const config = load();
    assert.deepEqual(config.listen, { host: '127.0.0.1', port: 8080 });
    assert.equal(config.tunnelListen, 'tcp://127.0.0.1:7000');
    assert.deepEqual(config.adminListen, { host: '127.0.0.1', port: 8081 });
    assert.equal(config.dataDir, './.sluice');
    assert.deepEqual(config.clusters, []);
    assert.deepEqual(config.routes, []);
    assert.deepEqual(config.http, {
      responseTimeoutMs: 60_000,
      headersTimeoutMs: 20_000,
      requestTimeoutMs: 300_000,
      keepAliveTimeoutMs: 65_000,
      upgradeIdleTimeoutMs: 0,
      bodyIdleTimeoutMs: 30_000,
      maxRequestsPerClient: 256,
      maxHeaderBytes: 16_384,
      maxHeaders: 100,
      via: 'sluice',
      forwarded: false,
      trustedProxies: [],
      redirectHttps: false,
      redirectExclude: ['/.well-known/acme-challenge/'],
      redirectPort: 0,
      hsts: null,
    });
    assert.deepEqual(config.tunnel, DEFAULT_SESSION_OPTIONS);
    assert.equal(config.logLevel, 'info');
    assert.equal('tunnelCert' in config, false);
    assert.equal('tunnelKey' in config, false);
  });

  test('an empty file, or one of comments only, means the defaults', () => {
    assert.deepEqual({ ...load({ yaml: '' }) }, { ...load() });
    assert.deepEqual({ ...load({ yaml: '# nothing yet\n' }) }, { ...load() });
  });

  test('the result is frozen all the way down', () => {
    const config = load({ yaml: `${CLUSTERS}routes: [{host: x.test, cluster: a, target: "http://x:1"}]\n` });
    for (const part of [config, config.listen, config.http, config.tunnel, config.clusters, config.routes]) {
      assert.ok(Object.isFrozen(part));
    }
    assert.ok(Object.isFrozen(config.clusters[0]!.tokens));
    assert.ok(Object.isFrozen(config.routes[0]));
  });
});

describe('loadControllerConfig: the YAML file', () => {
  test('every key of the DESIGN §5 shape', () => {
    const config = load({
      yaml: `
listen: 0.0.0.0:80
tunnelListen: tls://0.0.0.0:7443
tunnelCert: /etc/sluice/tls.crt
tunnelKey: /etc/sluice/tls.key
adminListen: "[::1]:0"
dataDir: /var/lib/sluice
clusters:
  - name: demo
    tokens: ["${DIGEST}", ${PLAIN}]
routes:
  - host: App.Example.Test
    cluster: demo
    target: http://127.0.0.1:9000
  - host: "*.example.test"
    path: /api/
    cluster: demo
    target: http://web.svc
http:
  responseTimeout: 30s
  headersTimeout: 5000
  requestTimeout: 0
  keepAliveTimeout: 1.5s
  upgradeIdleTimeout: 10m
  bodyIdleTimeout: 0
  maxRequestsPerClient: 8
  maxHeaderBytes: 32768
  maxHeaders: 50
  via: edge-1
  forwarded: true
  trustedProxies: [10.0.0.0/8, "2001:db8::1"]
tunnel:
  pingInterval: 5s
  pingTimeout: 1m
  gracePeriod: 0
  maxStreams: 100
logLevel: debug
`,
    });
    assert.deepEqual(config.listen, { host: '0.0.0.0', port: 80 });
    assert.equal(config.tunnelListen, 'tls://0.0.0.0:7443');
    assert.equal(config.tunnelCert, '/etc/sluice/tls.crt');
    assert.equal(config.tunnelKey, '/etc/sluice/tls.key');
    assert.deepEqual(config.adminListen, { host: '::1', port: 0 });
    assert.equal(config.dataDir, '/var/lib/sluice');
    assert.deepEqual(config.clusters, [{ name: 'demo', tokens: [DIGEST, PLAIN] }]);
    assert.deepEqual(config.routes, [
      { host: 'app.example.test', path: '/', cluster: 'demo', target: 'http://127.0.0.1:9000' },
      { host: '*.example.test', path: '/api', cluster: 'demo', target: 'http://web.svc:80' },
    ]);
    assert.deepEqual(config.http, {
      responseTimeoutMs: 30_000,
      headersTimeoutMs: 5_000,
      requestTimeoutMs: 0,
      keepAliveTimeoutMs: 1_500,
      upgradeIdleTimeoutMs: 600_000,
      bodyIdleTimeoutMs: 0,
      maxRequestsPerClient: 8,
      maxHeaderBytes: 32_768,
      maxHeaders: 50,
      via: 'edge-1',
      forwarded: true,
      trustedProxies: ['10.0.0.0/8', '2001:db8::1/128'],
      redirectHttps: false,
      redirectExclude: ['/.well-known/acme-challenge/'],
      redirectPort: 0,
      hsts: null,
    });
    assert.equal(config.tunnel.pingInterval, 5_000);
    assert.equal(config.tunnel.pingTimeout, 60_000);
    assert.equal(config.tunnel.gracePeriod, 0);
    assert.equal(config.tunnel.maxStreams, 100);
    assert.equal(config.tunnel.window, DEFAULT_SESSION_OPTIONS.window);
    assert.equal(config.logLevel, 'debug');
  });

  test('durations: milliseconds, or ms, s, m and h', () => {
    const timeout = (value: string) =>
      load({ yaml: `http: {responseTimeout: ${value}}` }).http.responseTimeoutMs;
    assert.equal(timeout('500ms'), 500);
    assert.equal(timeout('60s'), 60_000);
    assert.equal(timeout('5m'), 300_000);
    assert.equal(timeout('1h'), 3_600_000);
    assert.equal(timeout('0.5s'), 500);
    assert.equal(timeout('250'), 250);
  });

  test('a cluster without tokens has none', () => {
    assert.deepEqual(load({ yaml: 'clusters: [{name: c1}]' }).clusters, [{ name: 'c1', tokens: [] }]);
  });

  test('a bare host:port tunnelListen means plain TCP; URLs are normalized with their port', () => {
    const tunnel = (value: string) => load({ flags: { tunnelListen: value } }).tunnelListen;
    assert.equal(tunnel('0.0.0.0:7000'), 'tcp://0.0.0.0:7000');
    assert.equal(tunnel('[::1]:0'), 'tcp://[::1]:0');
    assert.equal(tunnel('localhost:7000'), 'tcp://localhost:7000');
    assert.equal(tunnel('ws://0.0.0.0:8000/tunnel'), 'ws://0.0.0.0:8000/tunnel');
    assert.equal(tunnel('ws://0.0.0.0'), 'ws://0.0.0.0:80/');
  });

  test('host:port takes IPv4, names and bracketed IPv6, and port 0', () => {
    const listen = (value: string) => load({ flags: { listen: value } }).listen;
    assert.deepEqual(listen('[::1]:8080'), { host: '::1', port: 8080 });
    assert.deepEqual(listen('127.0.0.1:0'), { host: '127.0.0.1', port: 0 });
    assert.deepEqual(listen('localhost:65535'), { host: 'localhost', port: 65535 });
  });

  test('adminListen off or none turns the admin listener off', () => {
    assert.equal(load({ yaml: 'adminListen: off' }).adminListen, null);
    assert.equal(load({ yaml: 'adminListen: none' }).adminListen, null);
    assert.equal(load({ flags: { adminListen: 'off' } }).adminListen, null);
    assert.equal(load({ env: { SLUICE_ADMIN_LISTEN: 'none' } }).adminListen, null);
    // And an address overrides an `off` in the file.
    assert.deepEqual(load({ yaml: 'adminListen: off', flags: { adminListen: '127.0.0.1:9' } }).adminListen, {
      host: '127.0.0.1',
      port: 9,
    });
  });

  test('serializing the config masks plain tokens but keeps digests', () => {
    const config = load({ yaml: `clusters: [{name: demo, tokens: ["${DIGEST}", ${PLAIN}]}]` });
    const json = JSON.stringify(config);
    assert.ok(!json.includes(PLAIN));
    assert.ok(json.includes(DIGEST));
    assert.deepEqual(config.clusters[0]!.tokens, [DIGEST, PLAIN]);
  });
});

describe('loadControllerConfig: precedence', () => {
  const yaml =
    'listen: 127.0.0.1:1\ntunnelListen: 127.0.0.1:2\nadminListen: 127.0.0.1:3\ndataDir: f\nlogLevel: warn\n';
  const env = {
    SLUICE_LISTEN: '127.0.0.1:11',
    SLUICE_TUNNEL_LISTEN: '127.0.0.1:12',
    SLUICE_ADMIN_LISTEN: '127.0.0.1:13',
    SLUICE_DATA: 'e',
    SLUICE_LOG_LEVEL: 'error',
  };
  const flags = {
    listen: '127.0.0.1:21',
    tunnelListen: '127.0.0.1:22',
    adminListen: '127.0.0.1:23',
    data: 'g',
    logLevel: 'debug',
  };
  const summary = (c: ControllerConfig) => [
    c.listen.port,
    c.tunnelListen,
    c.adminListen?.port,
    c.dataDir,
    c.logLevel,
  ];

  test('the file overrides the defaults', () => {
    assert.deepEqual(summary(load({ yaml })), [1, 'tcp://127.0.0.1:2', 3, 'f', 'warn']);
  });

  test('the environment overrides the file', () => {
    assert.deepEqual(summary(load({ yaml, env })), [11, 'tcp://127.0.0.1:12', 13, 'e', 'error']);
  });

  test('flags override the environment', () => {
    assert.deepEqual(summary(load({ yaml, env, flags })), [21, 'tcp://127.0.0.1:22', 23, 'g', 'debug']);
  });

  test('--grace-period and SLUICE_GRACE_PERIOD override tunnel.gracePeriod', () => {
    const yaml = 'tunnel: {gracePeriod: 10s, pingInterval: 5s}';
    assert.equal(load({ yaml }).tunnel.gracePeriod, 10_000);
    assert.equal(load({ yaml, env: { SLUICE_GRACE_PERIOD: '45s' } }).tunnel.gracePeriod, 45_000);
    const flagged = load({ yaml, flags: { gracePeriod: '1m' }, env: { SLUICE_GRACE_PERIOD: '45s' } });
    assert.equal(flagged.tunnel.gracePeriod, 60_000);
    assert.equal(flagged.tunnel.pingInterval, 5_000, 'the other tunnel options stay');
    assert.equal(load({ flags: { gracePeriod: '0' } }).tunnel.gracePeriod, 0);
    refuses(
      { flags: { gracePeriod: 'later' } },
      'tunnel.gracePeriod',
      /must be a duration: .*, got "later" \(from --grace-period\)$/,
    );
  });

  test('an empty variable counts as unset', () => {
    const empty = Object.fromEntries(Object.keys(env).map((k) => [k, '']));
    assert.deepEqual(summary(load({ yaml, env: empty })), [1, 'tcp://127.0.0.1:2', 3, 'f', 'warn']);
  });

  test('SLUICE_CONFIG names the file when --config does not', () => {
    const read = (path: string) => (path === 'env.yaml' ? 'dataDir: from-env' : 'dataDir: from-flag');
    const fromEnv = loadControllerConfig({ flags: {}, env: { SLUICE_CONFIG: 'env.yaml' }, readFile: read });
    assert.equal(fromEnv.dataDir, 'from-env');
    const fromFlag = loadControllerConfig({
      flags: { config: 'flag.yaml' },
      env: { SLUICE_CONFIG: 'env.yaml' },
      readFile: read,
    });
    assert.equal(fromFlag.dataDir, 'from-flag');
  });

  test('a log level in capitals is accepted', () => {
    assert.equal(load({ env: { SLUICE_LOG_LEVEL: 'DEBUG' } }).logLevel, 'debug');
  });
});

describe('loadControllerConfig: the file itself', () => {
  test('a missing or unreadable file is refused under `config`', () => {
    assert.throws(
      () =>
        loadControllerConfig({
          flags: { config: 'missing.yaml' },
          env: {},
          readFile: () => {
            throw new Error("ENOENT: no such file or directory, open 'missing.yaml'");
          },
        }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.equal(err.key, 'config');
        assert.match(err.message, /^config file "missing.yaml" cannot be read: ENOENT/);
        return true;
      },
    );
  });

  test('a YAML syntax error names the file, the line and the parser message', () => {
    refuses(
      { yaml: 'listen: 127.0.0.1:1\nroutes:\n  - host: [x\n' },
      'config',
      /"sluice\.yaml" is not valid YAML at line \d+/,
    );
    const err = refuses({ yaml: 'listen: a\nhttp:\n  via: x\n  via: y\n' }, 'config', /line 4, column 3/);
    assert.match(err.message, /Map keys must be unique/);
  });

  test('a file that is not a mapping is refused', () => {
    refuses({ yaml: '- listen: x\n' }, 'config', /must hold a mapping .*, got a list/);
    refuses({ yaml: 'just words\n' }, 'config', /got "just words"/);
  });

  test('clusters[].hosts and discovery: patterns lowercased, one leading wildcard label, a bounded grace period', () => {
    const config = load({
      yaml:
        'clusters:\n  - name: a\n    hosts: ["*.Shop.Example.Test", "app.example.test."]\n  - name: b\n' +
        'discovery:\n  gracePeriod: 2s\n  address: Edge.Example.Test\n',
    });
    assert.deepEqual(config.clusters[0]!.hosts, ['*.shop.example.test', 'app.example.test']);
    assert.equal(config.clusters[1]!.hosts, undefined);
    assert.deepEqual(config.discovery, { gracePeriodMs: 2000, address: 'edge.example.test' });
    assert.deepEqual(load().discovery, { gracePeriodMs: 5 * 60_000 });
    assert.deepEqual(load({ yaml: 'discovery:\n  address: 203.0.113.7\n' }).discovery, {
      gracePeriodMs: 5 * 60_000,
      address: '203.0.113.7',
    });
    for (const bad of ['a.*.test', '*', '**.test', '*.', 'a b', 'http://x.test']) {
      refuses(
        { yaml: `clusters:\n  - name: a\n    hosts: [${JSON.stringify(bad)}]\n` },
        'clusters[0].hosts[0]',
        /must be a hostname or \*\.suffix/,
      );
    }
    refuses({ yaml: 'discovery:\n  gracePeriod: 10ms\n' }, 'discovery.gracePeriod', /must be between/);
    refuses({ yaml: 'discovery:\n  address: "not an address"\n' }, 'discovery.address', /hostname or an IP/);
    refuses({ yaml: 'discovery:\n  grace: 1s\n' }, 'discovery.grace', /known: gracePeriod, address/);
  });

  test('an unknown key is refused with the known ones and its line', () => {
    refuses(
      { yaml: 'listen: 127.0.0.1:1\nlistn: 127.0.0.1:2\n' },
      'listn',
      /is not a known key \(known: listen, tunnelListen, .*\) \(sluice\.yaml:2\)$/,
    );
    refuses(
      { yaml: 'http:\n  responsetimeout: 1s\n' },
      'http.responsetimeout',
      /known: responseTimeout, headersTimeout/,
    );
    refuses(
      { yaml: 'clusters:\n  - name: a\n    token: x\n' },
      'clusters[0].token',
      /known: name, tokens, hosts\) \(sluice\.yaml:3\)/,
    );
    refuses(
      { yaml: 'tunnel:\n  pingIntervall: 1s\n' },
      'tunnel.pingIntervall',
      /is not a known option \(sluice\.yaml:2\)/,
    );
    refuses(
      {
        yaml: `${CLUSTERS}routes:\n  - host: a.test\n    paht: /x\n    cluster: a\n    target: http://a:1\n`,
      },
      'routes[0].paht',
      /is not a route field/,
    );
  });

  test('a value of the wrong kind says what was expected', () => {
    refuses(
      { yaml: 'clusters: {name: a}\n' },
      'clusters',
      /must be a list, got a mapping \(sluice\.yaml:1\)/,
    );
    refuses({ yaml: 'http: 5\n' }, 'http', /must be a mapping, got 5/);
    refuses({ yaml: 'routes:\n' }, 'routes', /must be a list, got null/);
    refuses({ yaml: 'tunnel: [1]\n' }, 'tunnel', /must be a mapping, got a list/);
  });
});

describe('loadControllerConfig: refusals', () => {
  test('a bad route names its field and line', () => {
    const yaml = `${CLUSTERS}routes:
  - {host: a.test, cluster: a, target: "http://a:1"}
  - {host: b.test, cluster: a, target: "http://b:1"}
  - {host: c.test, cluster: b, target: "ftp://c"}
`;
    refuses(
      { yaml },
      'routes[2].target',
      /^routes\[2\]\.target must be an http:\/\/, https:\/\/ or h2c:\/\/ URL .*, got "ftp:\/\/c" \(sluice\.yaml:8\)$/,
    );
    refuses(
      { yaml: `${CLUSTERS}routes: [{host: "bad host", cluster: a, target: "http://a:1"}]` },
      'routes[0].host',
      /must be a hostname/,
    );
  });

  test('two routes with the same host and path are refused', () => {
    const route = '{host: a.test, cluster: a, target: "http://a:1"}';
    refuses({ yaml: `${CLUSTERS}routes: [${route}, ${route}]` }, 'routes[1]', /repeats routes\[0\]/);
  });

  test('a route must name a configured cluster', () => {
    const yaml = `${CLUSTERS}routes:\n  - {host: a.test, cluster: a, target: "http://a:1"}\n  - {host: b.test, cluster: shop, target: "http://b:1"}\n`;
    refuses(
      { yaml },
      'routes[1].cluster',
      /names no cluster in clusters: "shop" \(known: a, b\) \(sluice\.yaml:7\)/,
    );
    refuses(
      { yaml: 'routes: [{host: a.test, cluster: a, target: "http://a:1"}]' },
      'routes[0].cluster',
      /\(known: none\)/,
    );
  });

  test('cluster names are unique DNS labels', () => {
    refuses(
      { yaml: 'clusters: [{name: a}, {name: b}, {name: a}]' },
      'clusters[2].name',
      /repeats clusters\[0\]\.name "a"/,
    );
    refuses(
      { yaml: 'clusters: [{name: Shop}]' },
      'clusters[0].name',
      /must be a cluster name: .*, got "Shop"/,
    );
    refuses({ yaml: 'clusters: [{name: -a}]' }, 'clusters[0].name', /got "-a"/);
    refuses({ yaml: `clusters: [{name: ${'a'.repeat(64)}}]` }, 'clusters[0].name', /must be a cluster name/);
    refuses({ yaml: 'clusters: [{tokens: []}]' }, 'clusters[0].name', /is required/);
  });

  test('a bad token is refused without showing it', () => {
    const short = 'short-secret';
    const err = refuses(
      { yaml: `clusters: [{name: a, tokens: ["${DIGEST}", ${short}]}]` },
      'clusters[0].tokens[1]',
      /must be "sha256:" followed by 64 lowercase hex digits, or a plain token of at least 16/,
    );
    assert.ok(!err.message.includes(short));
    const upper = `sha256:${'AB'.repeat(32)}`;
    const bad = refuses(
      { yaml: `clusters: [{name: a, tokens: ["${upper}"]}]` },
      'clusters[0].tokens[0]',
      /64 lowercase hex digits \(the value is not shown\)/,
    );
    assert.ok(!bad.message.includes(upper));
    refuses(
      { yaml: 'clusters: [{name: a, tokens: ["has a space in it, long enough"]}]' },
      'clusters[0].tokens[0]',
      /without spaces/,
    );
    refuses(
      { yaml: 'clusters: [{name: a, tokens: [12345678901234567890]}]' },
      'clusters[0].tokens[0]',
      /plain token/,
    );
  });

  test('a token may belong to one cluster only, as itself or as its digest', () => {
    const digest = `sha256:${createHash('sha256').update(PLAIN).digest('hex')}`;
    const err = refuses(
      { yaml: `clusters: [{name: a, tokens: [${PLAIN}]}, {name: b, tokens: ["${digest}"]}]` },
      'clusters[1].tokens[0]',
      /is the same token as clusters\[0\]\.tokens\[0\]/,
    );
    assert.ok(!err.message.includes(PLAIN));
  });

  test('bad durations and numbers under http', () => {
    refuses(
      { yaml: 'http: {responseTimeout: soon}' },
      'http.responseTimeout',
      /must be a duration: .*"500ms".*, got "soon"/,
    );
    refuses(
      { yaml: 'http: {responseTimeout: 2h}' },
      'http.responseTimeout',
      /must be between 100ms and 1h, got "2h"/,
    );
    refuses({ yaml: 'http: {responseTimeout: -1}' }, 'http.responseTimeout', /must be a duration/);
    refuses({ yaml: 'http: {responseTimeout: 0.5ms}' }, 'http.responseTimeout', /must be a duration/);
    refuses(
      { yaml: 'http: {keepAliveTimeout: 0}' },
      'http.keepAliveTimeout',
      /must be between 100ms and 1h, got 0/,
    );
    refuses({ yaml: 'http: {requestTimeout: 50}' }, 'http.requestTimeout', /or 0 to turn it off/);
    refuses(
      { yaml: 'http: {headersTimeout: 2m, requestTimeout: 1m}' },
      'http.headersTimeout',
      /must be at most http\.requestTimeout \(1m\)/,
    );
    refuses(
      { yaml: 'http: {requestTimeout: 10s}' },
      'http.requestTimeout',
      /must be at least http\.headersTimeout \(20s\), or 0/,
    );
    refuses(
      { yaml: 'http: {maxHeaderBytes: 512}' },
      'http.maxHeaderBytes',
      /between 1 KiB and 1 MiB, got 512/,
    );
    refuses({ yaml: 'http: {maxHeaders: 0}' }, 'http.maxHeaders', /between 1 and 10000/);
    refuses({ yaml: 'http: {bodyIdleTimeout: 50}' }, 'http.bodyIdleTimeout', /or 0 to turn it off/);
    refuses(
      { yaml: 'http: {maxRequestsPerClient: -1}' },
      'http.maxRequestsPerClient',
      /integer between 0 and 1000000, got -1/,
    );
    refuses({ yaml: 'http: {via: "two words"}' }, 'http.via', /RFC 9110 token/);
  });

  test('http.forwarded is a boolean; http.trustedProxies a list of IPv4 and IPv6 ranges', () => {
    refuses({ yaml: 'http: {forwarded: "yes"}' }, 'http.forwarded', /must be true or false, got "yes"/);
    refuses({ yaml: 'http: {trustedProxies: 10.0.0.0/8}' }, 'http.trustedProxies', /must be a list/);
    const range = /must be an IP address or a CIDR range such as 10\.0\.0\.0\/8 or fd00::\/8/;
    for (const bad of ['10.0.0.300/8', 'lb.internal', '', 'fe80::1%eth0', '10/8', 8]) {
      const yaml = `http:\n  trustedProxies:\n    - 192.0.2.1\n    - ${JSON.stringify(bad)}\n`;
      const err = refuses({ yaml }, 'http.trustedProxies[1]', range);
      assert.match(err.message, /\(sluice\.yaml:4\)$/, 'the line of the bad entry');
    }
    refuses(
      { yaml: 'http: {trustedProxies: [10.0.0.0/33]}' },
      'http.trustedProxies[0]',
      /prefix length of 0 to 32 for an IPv4 range, got "10\.0\.0\.0\/33"/,
    );
    refuses({ yaml: 'http: {trustedProxies: [10.0.0.0/]}' }, 'http.trustedProxies[0]', /prefix length/);
    refuses(
      { yaml: 'http: {trustedProxies: ["fd00::/129"]}' },
      'http.trustedProxies[0]',
      /prefix length of 0 to 128 for an IPv6 range/,
    );
    refuses(
      { yaml: 'http: {trustedProxies: ["::ffff:10.0.0.0/104"]}' },
      'http.trustedProxies[0]',
      /IPv4-mapped range as IPv4 \(10\.0\.0\.0\/8\)/,
    );
    const ok = load({ yaml: 'http: {trustedProxies: [0.0.0.0/0, "::/0", 192.0.2.7, "fd00::/08"]}' });
    assert.deepEqual(ok.http.trustedProxies, ['0.0.0.0/0', '::/0', '192.0.2.7/32', 'fd00::/8']);
  });

  test('bad tunnel options, with duration strings converted first', () => {
    refuses(
      { yaml: 'tunnel: {pingInterval: 1x}' },
      'tunnel.pingInterval',
      /must be a duration.*got "1x" \(sluice\.yaml:1\)/,
    );
    refuses({ yaml: 'tunnel: {pingInterval: 10m}' }, 'tunnel.pingInterval', /between 100ms and 5m/);
    refuses(
      { yaml: 'tunnel: {pingInterval: 1m, pingTimeout: 30s}' },
      'tunnel.pingTimeout',
      /at least tunnel\.pingInterval/,
    );
    refuses({ yaml: 'tunnel: {window: big}' }, 'tunnel.window', /must be a number/);
  });

  test('a tls:// or wss:// tunnel listener needs a certificate and key', () => {
    refuses(
      { yaml: 'tunnelListen: tls://0.0.0.0:7443' },
      'tunnelCert',
      /is required when tunnelListen is tls:\/\/0\.0\.0\.0:7443/,
    );
    refuses(
      { yaml: 'tunnelCert: c.pem', flags: { tunnelListen: 'wss://0.0.0.0:443/t' } },
      'tunnelKey',
      /is required/,
    );
    refuses(
      { yaml: 'tunnelCert: c.pem\ntunnelKey: k.pem\ntunnelListen: 0.0.0.0:7000' },
      'tunnelCert',
      /is set, but tunnelListen tcp:\/\/0\.0\.0\.0:7000 is plain tcp:\/\//,
    );
  });

  test('a bad address names the key and where it came from', () => {
    refuses(
      { flags: { listen: 'localhost' } },
      'listen',
      /^listen must be host:port .*, got "localhost" \(from --listen\)$/,
    );
    refuses(
      { env: { SLUICE_LISTEN: '127.0.0.1:65536' } },
      'listen',
      /got "127\.0\.0\.1:65536" \(from SLUICE_LISTEN\)$/,
    );
    refuses({ yaml: 'dataDir: d\nlisten: "::1:8080"\n' }, 'listen', /got "::1:8080" \(sluice\.yaml:2\)$/);
    refuses({ flags: { listen: ':8080' } }, 'listen', /must be host:port/);
    refuses({ flags: { listen: '[::1]' } }, 'listen', /must be host:port/);
    refuses({ flags: { listen: 'a b:80' } }, 'listen', /must be host:port/);
    refuses(
      { flags: { adminListen: 'nowhere' } },
      'adminListen',
      /must be host:port .* or "off", got "nowhere"/,
    );
    refuses({ yaml: 'listen: 8080' }, 'listen', /got 8080/);
  });

  test('a bad tunnelListen is an invalid URL under its key', () => {
    refuses(
      { flags: { tunnelListen: 'http://0.0.0.0:7000' } },
      'tunnelListen',
      /is not a usable listen address: .*unsupported scheme http:/,
      'SLUICE_ERR_INVALID_URL',
    );
    refuses(
      { yaml: 'tunnelListen: tcp://0.0.0.0' },
      'tunnelListen',
      /has no port.*\(sluice\.yaml:1\)/,
      'SLUICE_ERR_INVALID_URL',
    );
    refuses(
      { env: { SLUICE_TUNNEL_LISTEN: 'localhost' } },
      'tunnelListen',
      /\(from SLUICE_TUNNEL_LISTEN\)$/,
      'SLUICE_ERR_INVALID_URL',
    );
  });

  test('a bad log level or data directory', () => {
    refuses(
      { flags: { logLevel: 'loud' } },
      'logLevel',
      /must be one of fatal, error, warn, info, debug, trace, silent, got "loud" \(from --log-level\)/,
    );
    refuses({ yaml: 'logLevel: 3' }, 'logLevel', /got 3/);
    refuses({ flags: { data: '' } }, 'dataDir', /must be a directory path, got "" \(from --data\)/);
  });

  test('DEFAULT_HTTP_OPTIONS are the http defaults', () => {
    assert.deepEqual(load({ yaml: 'http: {}' }).http, DEFAULT_HTTP_OPTIONS);
  });
});

describe('loadControllerConfig: the store and the peer listener (a fleet)', () => {
  const FLEET = { peerListen: 'tcp://0.0.0.0:7001', peerAdvertise: 'tcp://10.0.0.5:7001' };

  test('SQLite in the data dir without --store; no peer listener', () => {
    const config = load();
    assert.deepEqual(config.store, { kind: 'sqlite' });
    assert.equal(config.peer, undefined);
  });

  test('redis:// and rediss:// from the flag, $SLUICE_STORE and the file, in that order', () => {
    assert.deepEqual(load({ flags: { store: 'redis://127.0.0.1:6379/2', ...FLEET } }).store, {
      kind: 'redis',
      url: 'redis://127.0.0.1:6379/2',
    });
    const env = { SLUICE_STORE: 'rediss://r.internal:6380', SLUICE_PEER_LISTEN: '0.0.0.0:7001' };
    const fromEnv = load({ env: { ...env, SLUICE_PEER_ADVERTISE: 'tls://10.0.0.5:7001' } });
    assert.deepEqual(fromEnv.store, { kind: 'redis', url: 'rediss://r.internal:6380' });
    assert.deepEqual(fromEnv.peer, { listen: 'tcp://0.0.0.0:7001', advertise: 'tls://10.0.0.5:7001' });
    const yaml =
      'store: redis://file:6379\npeerListen: 127.0.0.1:7001\npeerAdvertise: tcp://127.0.0.1:7001\n';
    assert.equal(load({ yaml }).store.kind, 'redis');
    assert.equal(load({ yaml, flags: { store: 'redis://flag:1' } }).store.kind, 'redis');
    assert.deepEqual(load({ yaml, flags: { store: 'redis://flag:1' } }).store, {
      kind: 'redis',
      url: 'redis://flag:1',
    });
  });

  test('the Sentinel form names its Sentinels, the master and the database', () => {
    const store = 'redis+sentinel://:pw@s1:26379,s2:26380/mymaster/3';
    assert.deepEqual(load({ flags: { store, ...FLEET } }).store, {
      kind: 'sentinel',
      url: store,
      sentinels: [
        { host: 's1', port: 26379 },
        { host: 's2', port: 26380 },
      ],
      name: 'mymaster',
      db: 3,
      tls: false,
    });
  });

  test('bad store URLs are refused, and a password never shows in the message', () => {
    refuses({ flags: { store: 'mysql://db:3306' } }, 'store', /must be redis:\/\//);
    refuses({ flags: { store: 'redis://:secret@h:1/99' } }, 'store', /database "99"/);
    refuses({ flags: { store: 'redis+sentinel://s1:26379' } }, 'store', /master name is missing/);
    const error = refuses({ flags: { store: 'memcache://u:hunter22@h:1' } }, 'store', /must be redis/);
    assert.doesNotMatch(error.message, /hunter22/);
  });

  test('a Redis store requires both peer settings; SQLite refuses them', () => {
    const store = 'redis://127.0.0.1:6379';
    refuses({ flags: { store } }, 'peerListen', /required with a Redis store/);
    refuses({ flags: { store, peerListen: FLEET.peerListen } }, 'peerAdvertise', /required/);
    refuses({ flags: { store, ...FLEET, peerAdvertise: 'tcp://0.0.0.0:7001' } }, 'peerAdvertise', /wildcard/);
    refuses({ flags: { peerListen: FLEET.peerListen } }, 'peerListen', /needs a shared store/);
  });

  test('the store password and the peer secret are masked when the config is printed', () => {
    const config = load({
      flags: { store: 'redis://:hunter22@127.0.0.1:6379', ...FLEET },
      env: { SLUICE_PEER_SECRET: 'fleet-secret-0123456789' },
    });
    assert.equal(config.peer?.secret, 'fleet-secret-0123456789');
    const printed = JSON.stringify(config);
    assert.doesNotMatch(printed, /hunter22|fleet-secret/);
    refuses(
      { flags: { store: 'redis://h:1', ...FLEET }, env: { SLUICE_PEER_SECRET: 'short' } },
      'peerSecret',
      /16/,
    );
  });
});

describe('http.redirectHttps, http.redirectExclude and http.hsts', () => {
  const TLS = 'tls:\n  listen: 127.0.0.1:8443\n  certs:\n    - { cert: /c.pem, key: /c.key }\n';

  test('off by default; redirectExclude defaults to the ACME HTTP-01 path', () => {
    const { http } = load({ yaml: 'http: {}' });
    assert.equal(http.redirectHttps, false);
    assert.deepEqual(http.redirectExclude, ['/.well-known/acme-challenge/']);
    assert.equal(http.hsts, null);
  });

  test('redirectHttps with a TLS listener, from the file or from the flags', () => {
    const yaml = `${TLS}http:\n  redirectHttps: true\n  redirectExclude: [/acme/, /healthz]\n`;
    const { http } = load({ yaml });
    assert.equal(http.redirectHttps, true);
    assert.deepEqual(http.redirectExclude, ['/acme/', '/healthz']);
    const flags = { tlsListen: '127.0.0.1:8443', tlsCert: '/c.pem', tlsKey: '/c.key' } as ControllerFlags;
    assert.equal(load({ yaml: 'http:\n  redirectHttps: true\n', flags }).http.redirectHttps, true);
    assert.deepEqual(load({ yaml: `${TLS}http:\n  redirectExclude: []\n` }).http.redirectExclude, []);
  });

  test('redirectHttps without a TLS listener is refused, naming the key', () => {
    refuses({ yaml: 'http:\n  redirectHttps: true\n' }, 'http.redirectHttps', /no TLS listener.*tls\.listen/);
    refuses({ yaml: 'http:\n  redirectHttps: yes\n' }, 'http.redirectHttps', /true or false/);
  });

  test("redirectPort: a port for the Location, or 0 to name the listener's own", () => {
    assert.equal(load({ yaml: `${TLS}http:\n  redirectHttps: true\n` }).http.redirectPort, 0);
    assert.equal(load({ yaml: `${TLS}http:\n  redirectPort: 443\n` }).http.redirectPort, 443);
    for (const bad of ['65536', 'https', '-1', '44.3']) {
      refuses({ yaml: `${TLS}http:\n  redirectPort: ${bad}\n` }, 'http.redirectPort', /./);
    }
  });

  test('redirectExclude entries must be plain path prefixes', () => {
    const bad = ['acme', '', '/a b', '/a?x', '/a#x', '/a/../b', '/%2e%2e/', 7, '/' + 'x'.repeat(300)];
    for (const value of bad) {
      const yaml = `${TLS}http:\n  redirectExclude: [${JSON.stringify(value)}]\n`;
      refuses({ yaml }, 'http.redirectExclude[0]', /path prefix/);
    }
    refuses({ yaml: `${TLS}http:\n  redirectExclude: /acme/\n` }, 'http.redirectExclude', /a list/);
  });

  test('hsts: off, or a mapping resolved to the header value', () => {
    const hsts = (value: string): string | null => load({ yaml: `http:\n  hsts: ${value}\n` }).http.hsts;
    assert.equal(hsts('off'), null);
    assert.equal(hsts('false'), null);
    assert.equal(hsts('{maxAge: 180d}'), 'max-age=15552000');
    assert.equal(hsts('{maxAge: 0}'), 'max-age=0');
    assert.equal(hsts('{maxAge: 90s, includeSubDomains: true}'), 'max-age=90; includeSubDomains');
    assert.equal(
      hsts('{maxAge: 730d, includeSubDomains: true, preload: true}'),
      'max-age=63072000; includeSubDomains; preload',
    );
    assert.equal(hsts('{maxAge: 12h, includeSubDomains: false, preload: false}'), 'max-age=43200');
  });

  test('hsts refusals name the sub-key at fault', () => {
    const yaml = (value: string): Load => ({ yaml: `http:\n  hsts: ${value}\n` });
    refuses(yaml('on'), 'http.hsts', /off or a mapping/);
    refuses(yaml('[1]'), 'http.hsts', /off or a mapping/);
    refuses(yaml('{}'), 'http.hsts.maxAge', /is required/);
    refuses(yaml('{maxAge: 31536000}'), 'http.hsts.maxAge', /with a unit/);
    refuses(yaml('{maxAge: 1y}'), 'http.hsts.maxAge', /with a unit/);
    refuses(yaml('{maxAge: 3651d}'), 'http.hsts.maxAge', /up to 3650d/);
    refuses(yaml('{maxAge: 1d, subdomains: true}'), 'http.hsts.subdomains', /not a known key.*maxAge/);
    refuses(yaml('{maxAge: 1d, includeSubDomains: 1}'), 'http.hsts.includeSubDomains', /true or false/);
    refuses(yaml('{maxAge: 365d, preload: true}'), 'http.hsts.preload', /includeSubDomains: true/);
    refuses(
      yaml('{maxAge: 364d, includeSubDomains: true, preload: true}'),
      'http.hsts.preload',
      /at least 365d/,
    );
  });

  test('a refusal in the file names its line', () => {
    const err = refuses({ yaml: 'http:\n  hsts:\n    maxAge: 1y\n' }, 'http.hsts.maxAge', /unit/);
    assert.match(err.message, /sluice\.yaml:3\)$/);
  });
});

describe('tcpRoutes and tcp', () => {
  const tcp = (routes: string, extra = ''): Load => ({ yaml: `${CLUSTERS}tcpRoutes:\n${routes}${extra}` });

  test('none by default; the limits have their documented defaults', () => {
    const config = load({ yaml: CLUSTERS });
    assert.deepEqual(config.tcpRoutes, []);
    assert.deepEqual({ ...config.tcp }, { maxConnectionsPerClient: 64, maxConnectionsPerRoute: 10000 });
  });

  test('the second and the hundredth route load in order, with proxyProtocol only where set', () => {
    const lines = Array.from(
      { length: 100 },
      (_, i) =>
        `  - {listen: "127.0.0.1:${20000 + i}", cluster: ${i % 2 === 0 ? 'a' : 'b'}, target: "tcp://db-${i}.shop.svc:5432"${i === 99 ? ', proxyProtocol: v2' : ''}}\n`,
    ).join('');
    const routes = load(tcp(lines)).tcpRoutes;
    assert.equal(routes.length, 100);
    assert.deepEqual(routes[1], {
      listen: '127.0.0.1:20001',
      cluster: 'b',
      target: 'tcp://db-1.shop.svc:5432',
    });
    assert.deepEqual(routes[99], {
      listen: '127.0.0.1:20099',
      cluster: 'b',
      target: 'tcp://db-99.shop.svc:5432',
      proxyProtocol: 'v2',
    });
  });

  test('IPv6 listeners and targets, and several routes on port 0', () => {
    const routes = load(
      tcp(
        '  - {listen: "[::1]:0", cluster: a, target: "tcp://[fd00::1]:6379"}\n' +
          '  - {listen: "[::1]:0", cluster: a, target: "tcp://10.0.0.1:22"}\n',
      ),
    ).tcpRoutes;
    assert.deepEqual(
      routes.map((r) => r.target),
      ['tcp://[fd00::1]:6379', 'tcp://10.0.0.1:22'],
    );
  });

  test('each bad field is refused by name', () => {
    const route = (fields: string): Load => tcp(`  - {${fields}}\n`);
    const ok = 'cluster: a, target: "tcp://db:5432"';
    refuses(route(`listen: "db.example:5432", ${ok}`), 'tcpRoutes[0].listen', /must be host:port/);
    refuses(route(`listen: "127.0.0.1:65536", ${ok}`), 'tcpRoutes[0].listen', /must be host:port/);
    refuses(route(`listen: "127.0.0.1", ${ok}`), 'tcpRoutes[0].listen', /must be host:port/);
    const at = 'listen: "127.0.0.1:0", cluster: a';
    for (const target of [
      'http://db:5432',
      'tcp://db',
      'tcp://db:0',
      'tcp://db:5432/x',
      'tcp://u@db:1',
      'tcp://db:1?x',
    ]) {
      refuses(route(`${at}, target: "${target}"`), 'tcpRoutes[0].target', /must be tcp:\/\/host:port/);
    }
    refuses(
      route(`${at}, target: "tcp://db:1", proxyProtocol: v1`),
      'tcpRoutes[0].proxyProtocol',
      /must be v2/,
    );
    refuses(route(`${at}, target: "tcp://db:1", tls: passthrough`), 'tcpRoutes[0].tls', /is not a known key/);
    refuses(
      route('listen: "127.0.0.1:0", target: "tcp://db:1"'),
      'tcpRoutes[0].cluster',
      /must be a cluster name/,
    );
  });

  test('a route naming no configured cluster, and two on one fixed port, are refused', () => {
    refuses(
      tcp(
        '  - {listen: "127.0.0.1:0", cluster: a, target: "tcp://db:1"}\n  - {listen: "127.0.0.1:0", cluster: zz, target: "tcp://db:1"}\n',
      ),
      'tcpRoutes[1].cluster',
      /names no cluster in clusters: "zz" \(known: a, b\)/,
    );
    const twice = '  - {listen: "127.0.0.1:15432", cluster: a, target: "tcp://db:1"}\n';
    refuses(tcp(twice + twice), 'tcpRoutes[1].listen', /repeats tcpRoutes\[0\]\.listen/);
  });

  test('limits: whole numbers from 0 (off) up, unknown keys refused', () => {
    const none = '  []\n';
    const limits = load(tcp(none, 'tcp: {maxConnectionsPerClient: 0, maxConnectionsPerRoute: 5}\n')).tcp;
    assert.deepEqual({ ...limits }, { maxConnectionsPerClient: 0, maxConnectionsPerRoute: 5 });
    refuses(tcp(none, 'tcp: {maxConnectionsPerClient: -1}\n'), 'tcp.maxConnectionsPerClient', /whole number/);
    refuses(tcp(none, 'tcp: {maxConnectionsPerRoute: 1.5}\n'), 'tcp.maxConnectionsPerRoute', /whole number/);
    refuses(tcp(none, 'tcp: {maxConnections: 1}\n'), 'tcp.maxConnections', /is not a known key/);
  });
});

describe('tls.peekTimeout and passthrough routes', () => {
  const TLS = 'tls:\n  listen: 127.0.0.1:8443\n  certs:\n    - { cert: /c.pem, key: /c.key }\n';

  test('peekTimeout defaults to 10 s, takes a duration from 100 ms to 5 m', () => {
    assert.equal(load({ yaml: TLS }).tls?.peekTimeoutMs, 10_000);
    assert.equal(load({ yaml: `${TLS}  peekTimeout: 2s\n` }).tls?.peekTimeoutMs, 2000);
    assert.equal(load({ yaml: `${TLS}  peekTimeout: 250\n` }).tls?.peekTimeoutMs, 250);
    refuses({ yaml: `${TLS}  peekTimeout: 50\n` }, 'tls.peekTimeout', /100ms|100 ms/);
    refuses({ yaml: `${TLS}  peekTimeout: 10m\n` }, 'tls.peekTimeout', /5m|5 m/);
    refuses({ yaml: 'tls:\n  peekTimeout: 2s\n' }, 'tls.listen', /is required/);
  });

  test('a passthrough route loads with its tcp:// target; an HTTP route with one is refused', () => {
    const clusters = 'clusters:\n  - name: shop\n';
    const pass =
      '  - { host: db.example.test, cluster: shop, target: "tcp://ingress.shop.svc:443", tls: passthrough }\n';
    const { routes } = load({ yaml: `${clusters}routes:\n${pass}` });
    assert.deepEqual(routes, [
      {
        host: 'db.example.test',
        path: '/',
        cluster: 'shop',
        target: 'tcp://ingress.shop.svc:443',
        tls: 'passthrough',
      },
    ]);
    const http = '  - { host: db.example.test, cluster: shop, target: "tcp://ingress.shop.svc:443" }\n';
    refuses(
      { yaml: `${clusters}routes:\n${http}` },
      'routes[0].target',
      /only a route with tls: passthrough/,
    );
  });
});
