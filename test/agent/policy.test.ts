// The agent's target policy: defaults, wildcards, protected targets (cloud metadata, link-local, the
// Kubernetes API) that only an exact pattern reaches, and the address check the dialer runs after DNS.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  DEFAULT_ALLOW,
  isForbiddenAddress,
  isLocalAddress,
  kubernetesApiFromEnv,
  parseAllowPattern,
  type PolicyResult,
  TargetPolicy,
} from '../../src/agent/policy.js';
import { ConfigError } from '../../src/errors.js';

function allowed(policy: TargetPolicy, target: string): boolean {
  return policy.check(target).ok;
}

function reason(policy: TargetPolicy, target: string): string {
  const result = policy.check(target);
  assert.equal(result.ok, false, `${target} should be refused`);
  return (result as Extract<PolicyResult, { ok: false }>).reason;
}

const defaults = new TargetPolicy([]);
const everything = new TargetPolicy(['*:*']);

describe('TargetPolicy defaults', () => {
  test('no patterns means namespace-qualified Service names on any port', () => {
    assert.deepEqual(defaults.patterns, ['*.svc.cluster.local:*', '*.svc:*']);
    assert.deepEqual(DEFAULT_ALLOW, defaults.patterns);
    assert.deepEqual(defaults.check('http://web.shop.svc.cluster.local:8080'), {
      ok: true,
      scheme: 'http',
      host: 'web.shop.svc.cluster.local',
      port: 8080,
      exempt: false,
      viaWildcard: true,
    });
    assert.deepEqual(defaults.check('http://web.shop.svc'), {
      ok: true,
      scheme: 'http',
      host: 'web.shop.svc',
      port: 80,
      exempt: false,
      viaWildcard: true,
    });
  });

  test('loopback, bare names and outside names need an explicit pattern', () => {
    for (const target of [
      'http://127.0.0.1:3000',
      'http://[::1]:3000',
      'http://localhost:3000',
      'http://web',
      'http://web.shop',
      'http://example.com',
    ]) {
      assert.equal(allowed(defaults, target), false, target);
    }
    assert.equal(
      reason(defaults, 'http://127.0.0.1:3000'),
      'target http://127.0.0.1:3000 matches no --allow pattern (*.svc.cluster.local:*, *.svc:*)',
    );
  });

  test('the suffix itself is not a Service name', () => {
    assert.equal(allowed(defaults, 'http://svc.cluster.local'), false);
    assert.equal(allowed(defaults, 'http://svc'), false);
  });
});

describe('TargetPolicy patterns', () => {
  test('a suffix wildcard matches one or more whole labels', () => {
    const policy = new TargetPolicy(['*.shop.svc.cluster.local:8080']);
    assert.equal(allowed(policy, 'http://web.shop.svc.cluster.local:8080'), true);
    assert.equal(allowed(policy, 'http://a.b.shop.svc.cluster.local:8080'), true);
    assert.equal(allowed(policy, 'http://shop.svc.cluster.local:8080'), false);
    assert.equal(allowed(policy, 'http://web.myshop.svc.cluster.local:8080'), false);
    assert.equal(allowed(policy, 'http://web.shop.svc.cluster.local:8081'), false);
  });

  test('an exact host matches only itself, and the port must match', () => {
    const policy = new TargetPolicy(['127.0.0.1:3000', 'localhost:4000', 'api.internal:*']);
    assert.deepEqual(policy.check('http://127.0.0.1:3000'), {
      ok: true,
      scheme: 'http',
      host: '127.0.0.1',
      port: 3000,
      exempt: false,
      viaWildcard: false,
    });
    assert.equal(allowed(policy, 'http://127.0.0.1:3001'), false);
    assert.equal(allowed(policy, 'http://localhost:4000'), true);
    assert.equal(allowed(policy, 'http://x.localhost:4000'), false);
    assert.equal(allowed(policy, 'http://api.internal:1'), true);
    assert.equal(allowed(policy, 'http://api.internal:65535'), true);
    assert.equal(allowed(policy, 'http://api.internal'), true);
  });

  test('a port wildcard matches any port; a missing port is 80', () => {
    const policy = new TargetPolicy(['web.svc:80']);
    assert.equal(allowed(policy, 'http://web.svc'), true);
    assert.equal(allowed(policy, 'http://web.svc:80'), true);
    assert.equal(allowed(policy, 'http://web.svc:8080'), false);
  });

  test('matching ignores case and trailing dots, and returns the host to dial', () => {
    const policy = new TargetPolicy(['*.SVC.Cluster.Local.:*', 'Web.Internal:80']);
    assert.deepEqual(policy.check('http://WEB.shop.svc.cluster.local.:8080/'), {
      ok: true,
      scheme: 'http',
      host: 'web.shop.svc.cluster.local.',
      port: 8080,
      exempt: false,
      viaWildcard: true,
    });
    assert.equal(allowed(policy, 'http://web.internal.'), true);
  });

  test('IPv6 patterns match the canonical address, and return it unbracketed', () => {
    const policy = new TargetPolicy(['[::1]:8080', '[2001:DB8:0:0::1]:*']);
    assert.deepEqual(policy.check('http://[::1]:8080'), {
      ok: true,
      scheme: 'http',
      host: '::1',
      port: 8080,
      exempt: false,
      viaWildcard: false,
    });
    assert.equal(allowed(policy, 'http://[0:0:0:0:0:0:0:1]:8080'), true);
    assert.equal(allowed(policy, 'http://[::1]:8081'), false);
    assert.equal(allowed(policy, 'http://[2001:db8::1]:443'), true);
    assert.equal(allowed(policy, 'http://[2001:db8::2]:443'), false);
  });

  test('a suffix wildcard never matches an IP address', () => {
    const policy = new TargetPolicy(['*.svc:*']);
    assert.equal(allowed(policy, 'http://10.0.0.1'), false);
    assert.equal(allowed(policy, 'http://[::1]'), false);
  });

  test('* matches every host, IP addresses included (but for the protected and loopback ones)', () => {
    for (const target of [
      'http://example.com',
      'http://10.0.0.1:1',
      'http://[2001:db8::1]:65535',
      'http://web',
    ]) {
      assert.equal(allowed(everything, target), true, target);
    }
  });

  test('a target matching several patterns is allowed once', () => {
    const policy = new TargetPolicy(['*:*', '*.svc:*', 'web.svc:80']);
    assert.equal(allowed(policy, 'http://web.svc'), true);
  });
});

describe('TargetPolicy protected targets', () => {
  const metadata = [
    'http://169.254.169.254',
    'http://169.254.169.254:8080',
    'http://[fd00:ec2::254]',
    'http://[FD00:EC2:0:0:0:0:0:254]',
    'http://metadata.google.internal',
    'http://METADATA.google.internal.',
    'http://100.100.100.200',
    'http://168.63.129.16',
    'http://[::ffff:169.254.169.254]',
    'http://[64:ff9b::a9fe:a9fe]',
  ];
  const linkLocal = [
    'http://169.254.0.1',
    'http://169.254.170.2',
    'http://[fe80::1]',
    'http://[febf::1]',
    'http://[::ffff:169.254.1.1]',
  ];
  const kubernetes = [
    'http://kubernetes',
    'http://kubernetes.default',
    'http://kubernetes.default.svc:443',
    'http://kubernetes.default.svc.cluster.local:443',
    'http://kubernetes.default.svc.corp.internal:443',
  ];

  test('a wildcard never reaches them, not even *:*', () => {
    const wide = new TargetPolicy(['*:*', '*.internal:*', '*.svc:*', '*.svc.cluster.local:*', '*.local:*']);
    for (const target of [...metadata, ...linkLocal, ...kubernetes]) {
      assert.equal(allowed(wide, target), false, target);
    }
  });

  test('the reasons say what the target is and how to allow it', () => {
    assert.equal(
      reason(everything, 'http://169.254.169.254'),
      'target http://169.254.169.254:80 is a cloud metadata address; allow it explicitly with --allow 169.254.169.254:80',
    );
    assert.equal(
      reason(everything, 'http://[fd00:ec2::254]'),
      'target http://[fd00:ec2::254]:80 is a cloud metadata address; allow it explicitly with --allow [fd00:ec2::254]:80',
    );
    assert.equal(
      reason(everything, 'http://metadata.google.internal.'),
      'target http://metadata.google.internal:80 is a cloud metadata address; ' +
        'allow it explicitly with --allow metadata.google.internal:80',
    );
    assert.equal(
      reason(everything, 'http://169.254.10.20:8080'),
      'target http://169.254.10.20:8080 is a link-local address; allow it explicitly with --allow 169.254.10.20:8080',
    );
    assert.equal(
      reason(everything, 'http://[fe80::1]:8080'),
      'target http://[fe80::1]:8080 is a link-local address; allow it explicitly with --allow [fe80::1]:8080',
    );
    assert.equal(
      reason(defaults, 'http://kubernetes.default.svc.cluster.local:443'),
      'target http://kubernetes.default.svc.cluster.local:443 is the Kubernetes API; ' +
        'allow it explicitly with --allow kubernetes.default.svc.cluster.local:443',
    );
  });

  test('other spellings of the metadata address are refused as the address itself', () => {
    for (const target of [
      'http://0xa9.0xfe.0xa9.0xfe',
      'http://169.16689662',
      'http://2852039166',
      'http://0251.0376.0251.0376',
      'http://169.254.169.254.',
      'http://169.254.169.254%2e',
    ]) {
      assert.match(
        reason(everything, target),
        /^target http:\/\/169\.254\.169\.254:80 is a cloud metadata address;/,
        target,
      );
    }
  });

  test('an exact pattern allows one, and marks it exempt from the resolved-address check', () => {
    const policy = new TargetPolicy([
      '169.254.169.254:80',
      'metadata.google.internal:*',
      'kubernetes.default.svc:443',
      '[fe80::1]:80',
    ]);
    assert.deepEqual(policy.check('http://169.254.169.254'), {
      ok: true,
      scheme: 'http',
      host: '169.254.169.254',
      port: 80,
      exempt: true,
      viaWildcard: false,
    });
    assert.equal(allowed(policy, 'http://169.254.169.254:8080'), false);
    assert.deepEqual(policy.check('http://metadata.google.internal:8080'), {
      ok: true,
      scheme: 'http',
      host: 'metadata.google.internal',
      port: 8080,
      exempt: true,
      viaWildcard: false,
    });
    assert.equal(allowed(policy, 'http://kubernetes.default.svc:443'), true);
    assert.equal(allowed(policy, 'http://kubernetes.default.svc.cluster.local:443'), false);
    assert.equal(allowed(policy, 'http://[fe80::1]'), true);
    assert.equal(allowed(policy, 'http://[fe80::2]'), false);
  });

  test('names that merely contain a protected name are ordinary', () => {
    for (const target of [
      'http://kubernetes.other.svc',
      'http://my-kubernetes.default.svc',
      'http://metadata.shop.svc',
    ]) {
      assert.equal(allowed(defaults, target), true, target);
    }
  });
});

describe('TargetPolicy bad targets', () => {
  test('refuses what is not an http:// URL with a valid host and port', () => {
    const cases: [string, string][] = [
      ['web.svc:80', 'target "web.svc:80" must be an http://, https://, h2c:// or tcp:// URL'],
      ['web.svc', 'target "web.svc" is not a URL'],
      ['http://user:pw@web.svc:99999', 'target "http://***@web.svc:99999" is not a URL'],
      ['', 'target "" is not a URL'],
      ['http://web.svc:65536', 'target "http://web.svc:65536" is not a URL'],
      ['http://web.svc:-1', 'target "http://web.svc:-1" is not a URL'],
      ['h2://web.svc', 'target "h2://web.svc" must be an http://, https://, h2c:// or tcp:// URL'],
      ['ws://web.svc', 'target "ws://web.svc" must be an http://, https://, h2c:// or tcp:// URL'],
      [
        'file:///etc/passwd',
        'target "file:///etc/passwd" must be an http://, https://, h2c:// or tcp:// URL',
      ],
      [
        'gopher://web.svc:70',
        'target "gopher://web.svc:70" must be an http://, https://, h2c:// or tcp:// URL',
      ],
      ['http://user:pw@web.svc:80', 'target "http://web.svc" must not carry credentials'],
      ['https://user@web.svc:8443/x', 'target "https://web.svc:8443" must not carry credentials'],
      ['http://web.svc:0', 'target "http://web.svc:0" has port 0, outside 1-65535'],
      ['http://a$b.svc', 'target "http://a$b.svc" has an invalid host name'],
      ['http://*.svc', 'target "http://*.svc" has an invalid host name'],
      ['http://web..svc', 'target "http://web..svc" has an invalid host name'],
    ];
    const policy = new TargetPolicy(['*:*']);
    for (const [target, expected] of cases) {
      assert.equal(reason(policy, target), expected, target);
    }
  });

  test('an untrusted target reaches the log bounded and escaped', () => {
    const forged = `x\n{"level":"info"}${'a'.repeat(300)}`;
    const text = reason(defaults, forged);
    assert.ok(!text.includes('\n'));
    assert.ok(text.length < 260, `${text.length}`);
  });
});

describe('parseAllowPattern', () => {
  test('parses the pattern kinds', () => {
    assert.deepEqual(parseAllowPattern('*.svc.cluster.local:*', 'k'), {
      kind: 'suffix',
      host: 'svc.cluster.local',
      port: '*',
      source: '*.svc.cluster.local:*',
    });
    assert.deepEqual(parseAllowPattern('*:*', 'k'), { kind: 'any', host: '*', port: '*', source: '*:*' });
    assert.deepEqual(parseAllowPattern('127.0.0.1:3000', 'k'), {
      kind: 'exact',
      host: '127.0.0.1',
      port: 3000,
      source: '127.0.0.1:3000',
    });
    assert.deepEqual(parseAllowPattern('[0::1]:65535', 'k'), {
      kind: 'exact',
      host: '::1',
      port: 65535,
      source: '[0::1]:65535',
    });
    assert.deepEqual(parseAllowPattern('My_Service.:1', 'k'), {
      kind: 'exact',
      host: 'my_service',
      port: 1,
      source: 'My_Service.:1',
    });
  });

  test('refuses bad patterns with the key and the pattern', () => {
    const bad = [
      'foo',
      '',
      ':80',
      'web.svc:',
      'web.svc:0',
      'web.svc:65536',
      'web.svc:080',
      'web.svc:http',
      'web.svc:8*',
      '*',
      '*.:80',
      '*.*.svc:80',
      'web-*.svc:80',
      'web.*:80',
      '*svc:80',
      '::1:8080',
      '[::1]',
      '[::1:8080',
      '[nope]:80',
      '[fe80::1%eth0]:80',
      '[127.0.0.1]:80',
      '*.0.0.1:80',
      '10.0.0:80',
      '010.0.0.1:80',
      'http://web.svc:80',
      'web svc:80',
      '\u212Aubernetes:443',
      `${'a'.repeat(64)}.svc:80`,
    ];
    for (const p of bad) {
      assert.throws(
        () => parseAllowPattern(p, 'agent.allow[1]'),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError);
          assert.equal(err.key, 'agent.allow[1]');
          assert.equal(
            err.message,
            `agent.allow[1] must be host:port with * wildcards, got ${JSON.stringify(p)}`,
          );
          return true;
        },
        p,
      );
    }
  });

  test('the constructor names the bad pattern by its index', () => {
    assert.throws(() => new TargetPolicy(['*.svc:*', 'foo']), {
      name: 'ConfigError',
      message: 'agent.allow[1] must be host:port with * wildcards, got "foo"',
    });
    assert.throws(() => new TargetPolicy(['foo'], '--allow'), {
      message: '--allow[0] must be host:port with * wildcards, got "foo"',
    });
  });
});

describe('isForbiddenAddress', () => {
  test('IPv4 metadata and link-local addresses', () => {
    for (const ip of [
      '169.254.169.254',
      '169.254.0.0',
      '169.254.255.255',
      '100.100.100.200',
      '168.63.129.16',
    ]) {
      assert.equal(isForbiddenAddress(ip), true, ip);
    }
    for (const ip of [
      '169.253.255.255',
      '169.255.0.0',
      '10.0.0.1',
      '127.0.0.1',
      '100.100.100.201',
      '0.0.0.0',
    ]) {
      assert.equal(isForbiddenAddress(ip), false, ip);
    }
  });

  test('IPv6 metadata and link-local addresses', () => {
    for (const ip of ['fd00:ec2::254', 'FD00:EC2:0:0:0:0:0:254', 'fe80::1', 'febf:ffff::1', 'fe80::1%eth0']) {
      assert.equal(isForbiddenAddress(ip), true, ip);
    }
    for (const ip of ['fec0::1', 'fd00:ec2::253', '::1', '2001:db8::1', 'fe7f::1']) {
      assert.equal(isForbiddenAddress(ip), false, ip);
    }
  });

  test('IPv4-mapped and NAT64 forms of IPv4 addresses', () => {
    for (const ip of [
      '::ffff:169.254.169.254',
      '::ffff:a9fe:a9fe',
      '::ffff:169.254.1.1',
      '64:ff9b::a9fe:a9fe',
      '64:ff9b::169.254.3.4',
      '64:ff9b::100.100.100.200',
    ]) {
      assert.equal(isForbiddenAddress(ip), true, ip);
    }
    for (const ip of ['::ffff:10.0.0.1', '64:ff9b::a00:1', '64:ff9a::a9fe:a9fe']) {
      assert.equal(isForbiddenAddress(ip), false, ip);
    }
  });

  test('a name or garbage is not an address', () => {
    for (const value of ['metadata.google.internal', 'kubernetes', '', '169.254.169.254:80', '[fe80::1]']) {
      assert.equal(isForbiddenAddress(value), false, value);
    }
  });
});

describe('TargetPolicy and the Kubernetes API address', () => {
  test("the pod's KUBERNETES_SERVICE_HOST is protected from wildcards", () => {
    const api = kubernetesApiFromEnv({ KUBERNETES_SERVICE_HOST: '10.96.0.1' });
    assert.deepEqual(api, ['10.96.0.1']);
    const wide = new TargetPolicy(['*:*'], 'allow', { kubernetesApi: api });
    assert.match(reason(wide, 'http://10.96.0.1:443'), /the Kubernetes API/);
    assert.equal(allowed(wide, 'http://10.96.0.2:443'), true);
    assert.equal(wide.forbidsAddress('10.96.0.1'), true, 'also after DNS');
    assert.equal(wide.forbidsAddress('::ffff:10.96.0.1'), true, 'and in its IPv4-mapped form');
    assert.equal(wide.forbidsAddress('10.96.0.2'), false);
    assert.equal(wide.forbidsAddress('169.254.169.254'), true, 'metadata stays protected');
  });

  test('an exact pattern still allows it, and outside Kubernetes nothing is added', () => {
    const api = kubernetesApiFromEnv({ KUBERNETES_SERVICE_HOST: '10.96.0.1' });
    const exact = new TargetPolicy(['10.96.0.1:443'], 'allow', { kubernetesApi: api });
    assert.deepEqual(exact.check('http://10.96.0.1:443'), {
      ok: true,
      scheme: 'http',
      host: '10.96.0.1',
      port: 443,
      exempt: true,
      viaWildcard: false,
    });
    assert.deepEqual(kubernetesApiFromEnv({}), []);
    assert.deepEqual(kubernetesApiFromEnv({ KUBERNETES_SERVICE_HOST: 'not-an-ip' }), []);
  });
});

// A wildcard must not reach the agent's own host: loopback and the unspecified address (which connects
// to the local host too) in every spelling the URL parser and a resolver may give, and `localhost`.
describe('TargetPolicy loopback under a wildcard', () => {
  const literals = [
    'http://127.0.0.1:3000',
    'http://127.0.0.2:3000',
    'http://127.255.255.254:3000',
    'http://127.1:3000',
    'http://2130706433:3000',
    'http://0x7f000001:3000',
    'http://0x7f.0.0.1:3000',
    'http://0177.0.0.1:3000',
    'http://127.0.0.1.:3000',
    'http://[::1]:3000',
    'http://[0:0:0:0:0:0:0:1]:3000',
    'http://[::ffff:127.0.0.1]:3000',
    'http://[::ffff:7f00:1]:3000',
    'http://[64:ff9b::7f00:1]:3000',
    'http://0.0.0.0:3000',
    'http://0:3000',
    'http://0.1.2.3:3000',
    'http://[::]:3000',
    'http://[::ffff:0.0.0.0]:3000',
  ];
  const names = ['http://localhost:3000', 'http://LOCALHOST.:3000', 'http://app.localhost:3000'];

  test('*:* refuses every form of a loopback or unspecified address, and localhost names', () => {
    for (const target of [...literals, ...names]) {
      assert.equal(allowed(everything, target), false, target);
    }
    const wide = new TargetPolicy(['*.localhost:*', '*.internal:*']);
    assert.equal(allowed(wide, 'http://app.localhost:3000'), false);
  });

  test('the reasons say what the target is and how to allow it', () => {
    assert.equal(
      reason(everything, 'http://2130706433:3000'),
      'target http://127.0.0.1:3000 is a loopback address; allow it explicitly with --allow 127.0.0.1:3000',
    );
    assert.equal(
      reason(everything, 'http://[::ffff:127.0.0.1]:3000'),
      'target http://[::ffff:7f00:1]:3000 is a loopback address; ' +
        'allow it explicitly with --allow [::ffff:7f00:1]:3000',
    );
    assert.equal(
      reason(everything, 'http://[::]:3000'),
      'target http://[::]:3000 is an unspecified address; allow it explicitly with --allow [::]:3000',
    );
    assert.equal(
      reason(everything, 'http://localhost:3000'),
      'target http://localhost:3000 is a loopback name; allow it explicitly with --allow localhost:3000',
    );
  });

  test('an exact pattern still allows them, and needs no loopback check after DNS', () => {
    const policy = new TargetPolicy(['127.0.0.1:3000', 'localhost:4000', '[::1]:5000', 'db.internal:6000']);
    for (const target of [
      'http://127.0.0.1:3000',
      'http://2130706433:3000',
      'http://localhost:4000',
      'http://[::1]:5000',
      'http://db.internal:6000',
    ]) {
      const result = policy.check(target);
      assert.equal(result.ok, true, target);
      assert.equal(result.ok && result.viaWildcard, false, target);
    }
  });

  test('a name allowed only by a wildcard is marked for the loopback check after DNS', () => {
    const policy = new TargetPolicy(['*.internal:*', 'db.internal:6000']);
    assert.deepEqual(policy.check('http://web.internal:8080'), {
      ok: true,
      scheme: 'http',
      host: 'web.internal',
      port: 8080,
      exempt: false,
      viaWildcard: true,
    });
    assert.equal((policy.check('http://db.internal:6000') as { viaWildcard: boolean }).viaWildcard, false);
    assert.equal((policy.check('http://db.internal:6001') as { viaWildcard: boolean }).viaWildcard, true);
  });

  test('forbidsWildcardAddress: every resolved form of loopback and unspecified, and what forbidsAddress covers', () => {
    const api = kubernetesApiFromEnv({ KUBERNETES_SERVICE_HOST: '10.96.0.1' });
    const policy = new TargetPolicy(['*.internal:*'], 'allow', { kubernetesApi: api });
    for (const ip of [
      '127.0.0.1',
      '127.0.1.1',
      '127.255.255.255',
      '::1',
      '0:0:0:0:0:0:0:1',
      '::ffff:127.0.0.1',
      '::ffff:7f00:1',
      '64:ff9b::7f00:1',
      '0.0.0.0',
      '0.255.255.255',
      '::',
      '::ffff:0.0.0.0',
      '169.254.169.254',
      '::ffff:169.254.169.254',
      'fe80::1',
      '10.96.0.1',
    ]) {
      assert.equal(policy.forbidsWildcardAddress(ip), true, ip);
    }
    // What is no canonical address (a resolver should never return one) is refused, not guessed at.
    for (const value of ['2130706433', '0x7f000001', '127.1', 'localhost', '', '[::1]']) {
      assert.equal(policy.forbidsWildcardAddress(value), true, JSON.stringify(value));
    }
    for (const ip of ['10.0.0.1', '1.0.0.0', '128.0.0.1', '2001:db8::1', '::2', '::ffff:10.0.0.1']) {
      assert.equal(policy.forbidsWildcardAddress(ip), false, ip);
      assert.equal(isLocalAddress(ip), false, ip);
    }
    assert.equal(policy.forbidsAddress('127.0.0.1'), false, 'an exact pattern may still dial loopback');
  });
});

describe('TargetPolicy schemes', () => {
  test('https:// and h2c:// targets are checked as http:// ones, with their default ports', () => {
    const policy = new TargetPolicy(['*.svc:*', '127.0.0.1:50051']);
    assert.deepEqual(policy.check('https://api.shop.svc'), {
      ok: true,
      scheme: 'https',
      host: 'api.shop.svc',
      port: 443,
      exempt: false,
      viaWildcard: true,
    });
    assert.deepEqual(policy.check('h2c://127.0.0.1:50051'), {
      ok: true,
      scheme: 'h2c',
      host: '127.0.0.1',
      port: 50051,
      exempt: false,
      viaWildcard: false,
    });
    // h2c's host is canonicalized as http's: no spelling of a protected address slips through.
    const metadata = policy.check('h2c://2852039166:80');
    assert.equal(metadata.ok, false);
    assert.match(
      !metadata.ok ? metadata.reason : '',
      /h2c:\/\/169\.254\.169\.254:80 is a cloud metadata address/,
    );
    const other = policy.check('https://127.0.0.1:8443');
    assert.equal(other.ok, false);
    assert.match(!other.ok ? other.reason : '', /https:\/\/127\.0\.0\.1:8443 matches no --allow pattern/);
  });
});

describe('TargetPolicy widened by discovered Services', () => {
  test('allows exactly the targets given, as a wildcard would, and forgets them when replaced', () => {
    const policy = new TargetPolicy(['127.0.0.1:3000']);
    assert.match(reason(policy, 'http://web.shop.svc.cluster.local:8080'), /matches no --allow pattern/);
    policy.setDiscovered(['web.shop.svc.cluster.local:8080', 'api.shop.svc.cluster.local:80']);
    assert.deepEqual(policy.check('http://web.shop.svc.cluster.local:8080'), {
      ok: true,
      scheme: 'http',
      host: 'web.shop.svc.cluster.local',
      port: 8080,
      exempt: false,
      viaWildcard: true,
    });
    // The same name, another port or a trailing dot; another name: only the exact host and port.
    assert.equal(allowed(policy, 'http://web.shop.svc.cluster.local.:8080'), true);
    assert.equal(allowed(policy, 'http://web.shop.svc.cluster.local:8081'), false);
    assert.equal(allowed(policy, 'http://db.shop.svc.cluster.local:8080'), false);
    assert.equal(allowed(policy, 'http://api.shop.svc.cluster.local'), true);
    // The patterns are untouched, and a new set replaces the old one (the cached verdicts too).
    assert.deepEqual(policy.patterns, ['127.0.0.1:3000']);
    assert.equal(allowed(policy, 'http://127.0.0.1:3000'), true);
    policy.setDiscovered(['api.shop.svc.cluster.local:80']);
    assert.equal(allowed(policy, 'http://web.shop.svc.cluster.local:8080'), false);
    policy.setDiscovered([]);
    assert.equal(allowed(policy, 'http://api.shop.svc.cluster.local'), false);
  });

  test('a discovered name never reaches a protected or local target', () => {
    const policy = new TargetPolicy(['127.0.0.1:3000']);
    policy.setDiscovered(['kubernetes.default.svc.cluster.local:443', 'localhost:3001']);
    assert.match(reason(policy, 'https://kubernetes.default.svc.cluster.local'), /is the Kubernetes API/);
    assert.match(reason(policy, 'http://localhost:3001'), /is a loopback name/);
    assert.throws(() => policy.setDiscovered(['169.254.169.254:80']), ConfigError);
    assert.throws(() => policy.setDiscovered(['*.svc:*']), ConfigError);
    assert.throws(() => policy.setDiscovered(['web.shop.svc:*']), ConfigError);
  });
});
