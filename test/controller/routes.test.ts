// The route table: host precedence (exact, then the longest wildcard suffix), path prefixes on segment
// boundaries, Host header normalization, and validateRoute's exact messages.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError } from '../../src/errors.js';
import { normalizeHost, RouteTable, validateRoute } from '../../src/controller/routes.js';
import type { Route } from '../../src/store/model.js';

function route(host: string, path?: string, cluster = 'c'): Route {
  const base = { host, cluster, target: `http://${cluster}.svc:80` };
  return path === undefined ? base : { ...base, path };
}

/** The `host path` of the route that matches, or undefined. */
function which(table: RouteTable, host: string, path = '/'): string | undefined {
  const hit = table.match(host, path);
  return hit === undefined ? undefined : `${hit.host} ${hit.path}`;
}

/** Asserts that validateRoute refuses `input` with exactly `message`, under `key`. */
function refuses(input: unknown, message: string, key = 'routes[0]'): void {
  assert.throws(
    () => validateRoute(input, key),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.message, message);
      assert.equal(err.code, 'SLUICE_ERR_INVALID_OPTION');
      return true;
    },
  );
}

describe('RouteTable.match: hosts', () => {
  const table = new RouteTable([
    route('*.example.test'),
    route('app.example.test'),
    route('*.b.example.test'),
    route('*.test'),
  ]);

  test('an exact host beats every wildcard', () => {
    assert.equal(which(table, 'app.example.test'), 'app.example.test /');
  });

  test('among wildcards the longest suffix wins', () => {
    assert.equal(which(table, 'a.b.example.test'), '*.b.example.test /');
    assert.equal(which(table, 'x.y.b.example.test'), '*.b.example.test /');
    assert.equal(which(table, 'b.example.test'), '*.example.test /');
    assert.equal(which(table, 'other.test'), '*.test /');
  });

  test('a wildcard matches one or more labels, never its suffix alone', () => {
    const only = new RouteTable([route('*.example.test')]);
    assert.equal(which(only, 'a.example.test'), '*.example.test /');
    assert.equal(which(only, 'a.b.example.test'), '*.example.test /');
    assert.equal(which(only, 'example.test'), undefined);
    assert.equal(which(only, 'badexample.test'), undefined);
  });

  test('host matching ignores case, a port and a trailing dot', () => {
    assert.equal(which(table, 'APP.Example.TEST'), 'app.example.test /');
    assert.equal(which(table, 'app.example.test:8080'), 'app.example.test /');
    assert.equal(which(table, 'app.example.test.'), 'app.example.test /');
    assert.equal(which(table, 'App.Example.Test.:443'), 'app.example.test /');
    assert.equal(which(table, 'app.example.test:'), 'app.example.test /');
  });

  test('no match is undefined', () => {
    assert.equal(which(table, 'example.org'), undefined);
    assert.equal(which(new RouteTable([]), 'app.example.test'), undefined);
  });

  test('an invalid Host never matches, even a wildcard', () => {
    for (const host of [
      '',
      '.example.test',
      'a..example.test',
      'a b.test',
      'app.example.test:80x',
      'a_b.test',
    ]) {
      assert.equal(which(table, host), undefined, host);
    }
  });

  test('an IPv6 literal Host loses its port and matches no hostname route', () => {
    const any = new RouteTable([route('*.test'), route('1')]);
    assert.equal(which(any, '[::1]:8080'), undefined);
    assert.equal(which(any, '[::1]'), undefined);
    assert.equal(which(any, '[::1'), undefined);
  });

  test('an IPv4 literal Host matches a route for that address', () => {
    const ip = new RouteTable([route('127.0.0.1')]);
    assert.equal(which(ip, '127.0.0.1:8080'), '127.0.0.1 /');
  });
});

describe('normalizeHost', () => {
  test('strips the port, lowercases and drops a trailing dot', () => {
    assert.equal(normalizeHost('App.Example.Test.:8080'), 'app.example.test');
    assert.equal(normalizeHost('localhost'), 'localhost');
  });

  test('keeps the brackets of an IPv6 literal and drops its port', () => {
    assert.equal(normalizeHost('[::1]:8080'), '[::1]');
    assert.equal(normalizeHost('[FE80::1]'), '[fe80::1]');
  });

  test('refuses malformed hosts', () => {
    for (const host of ['[::1', '[::1]x', '[::1]:a', '[nope]:80', 'a:b:c', ':80', 'a.-b.test']) {
      assert.equal(normalizeHost(host), undefined, host);
    }
  });
});

describe('RouteTable.match: paths', () => {
  const table = new RouteTable([
    route('app.example.test'),
    route('app.example.test', '/api'),
    route('app.example.test', '/api/v2'),
    route('*.example.test', '/static'),
  ]);

  test('a prefix matches on segment boundaries only', () => {
    for (const path of ['/api', '/api/', '/api/x', '/api?q=1', '/api#frag']) {
      assert.equal(which(table, 'app.example.test', path), 'app.example.test /api', path);
    }
    assert.equal(which(table, 'app.example.test', '/apix'), 'app.example.test /');
    assert.equal(which(table, 'app.example.test', '/ap'), 'app.example.test /');
  });

  test('the longest prefix wins', () => {
    assert.equal(which(table, 'app.example.test', '/api/v2/users'), 'app.example.test /api/v2');
    assert.equal(which(table, 'app.example.test', '/api/v2'), 'app.example.test /api/v2');
    assert.equal(which(table, 'app.example.test', '/api/v20'), 'app.example.test /api');
  });

  test('the query string is ignored, even when it looks like a path', () => {
    assert.equal(which(table, 'app.example.test', '/?next=/api/v2'), 'app.example.test /');
    assert.equal(which(table, 'app.example.test', '/api?x=/v2'), 'app.example.test /api');
  });

  test('paths match on the raw, percent-encoded bytes and case-sensitively', () => {
    assert.equal(which(table, 'app.example.test', '/%61pi'), 'app.example.test /');
    assert.equal(which(table, 'app.example.test', '/api%2Fv2'), 'app.example.test /');
    assert.equal(which(table, 'app.example.test', '/API'), 'app.example.test /');
  });

  test('the root prefix takes every path, even an empty or asterisk one', () => {
    assert.equal(which(table, 'app.example.test', ''), 'app.example.test /');
    assert.equal(which(table, 'app.example.test', '*'), 'app.example.test /');
  });

  test('with no matching path under the exact host, the wildcards are tried', () => {
    const split = new RouteTable([route('app.example.test', '/api'), route('*.example.test')]);
    assert.equal(which(split, 'app.example.test', '/api/x'), 'app.example.test /api');
    assert.equal(which(split, 'app.example.test', '/other'), '*.example.test /');
    assert.equal(which(table, 'app.example.test', '/static/x.css'), 'app.example.test /');
    assert.equal(which(table, 'www.example.test', '/static/x.css'), '*.example.test /static');
    assert.equal(which(table, 'www.example.test', '/'), undefined);
  });

  test('a longer wildcard suffix wins over a longer path under a shorter suffix', () => {
    const both = new RouteTable([route('*.example.test', '/a/b/c'), route('*.b.example.test')]);
    assert.equal(which(both, 'x.b.example.test', '/a/b/c'), '*.b.example.test /');
  });

  test('the matched route is the normalized one', () => {
    const hit = new RouteTable([
      { host: 'App.Example.Test.', path: '/api/', cluster: 'demo', target: 'HTTP://Web.Svc' },
    ]).match('app.example.test', '/api');
    assert.deepEqual(hit, {
      host: 'app.example.test',
      path: '/api',
      cluster: 'demo',
      target: 'http://web.svc:80',
    });
    assert.ok(Object.isFrozen(hit));
  });
});

describe('RouteTable: size, duplicates and scale', () => {
  test('size counts the routes', () => {
    assert.equal(new RouteTable([]).size, 0);
    assert.equal(new RouteTable([route('a.test'), route('a.test', '/x'), route('*.a.test')]).size, 3);
  });

  test('a repeated host and path names both indices', () => {
    assert.throws(() => new RouteTable([route('a.test'), route('b.test'), route('A.test.', '/')]), {
      name: 'ConfigError',
      message: 'routes[2] repeats routes[0]: host "a.test", path "/"',
    });
    assert.throws(() => new RouteTable([route('*.a.test', '/api/'), route('*.a.test', '/api', 'other')]), {
      message: 'routes[1] repeats routes[0]: host "*.a.test", path "/api"',
    });
  });

  test('the same path under different hosts is no duplicate', () => {
    assert.equal(
      new RouteTable([route('a.test', '/x'), route('*.a.test', '/x'), route('b.test', '/x')]).size,
      3,
    );
  });

  test('the constructor validates each route under its index', () => {
    assert.throws(() => new RouteTable([route('a.test'), route('bad host')]), {
      message: 'routes[1].host must be a hostname or *.suffix, got "bad host"',
    });
    assert.throws(() => new RouteTable([route('bad host')], 'config.routes'), {
      message: 'config.routes[0].host must be a hostname or *.suffix, got "bad host"',
    });
  });

  test('10,000 routes build and match', () => {
    const routes: Route[] = [];
    for (let i = 0; i < 5000; i++) {
      routes.push(route(`app${i}.example.test`, `/p${i % 10}`));
      routes.push(route(`*.tenant${i}.example.test`));
    }
    const table = new RouteTable(routes);
    assert.equal(table.size, 10_000);
    for (let i = 0; i < 5000; i += 7) {
      assert.equal(which(table, `app${i}.example.test`, `/p${i % 10}/x`), `app${i}.example.test /p${i % 10}`);
      assert.equal(which(table, `a.b.tenant${i}.example.test`), `*.tenant${i}.example.test /`);
    }
    assert.equal(which(table, 'app1.example.test', '/p2'), undefined);
  });
});

describe('validateRoute', () => {
  test('normalizes host, path and target', () => {
    assert.deepEqual(
      validateRoute({ host: '*.Example.TEST', cluster: 'demo', target: 'http://10.0.0.1' }, 'r'),
      {
        host: '*.example.test',
        path: '/',
        cluster: 'demo',
        target: 'http://10.0.0.1:80',
      },
    );
    const full = { host: 'a.test', path: '/a/b%20c/', cluster: 'c', target: 'http://[::1]:8080/' };
    assert.deepEqual(validateRoute(full, 'r'), {
      host: 'a.test',
      path: '/a/b%20c',
      cluster: 'c',
      target: 'http://[::1]:8080',
    });
  });

  test('is idempotent', () => {
    const once = validateRoute(
      { host: 'A.test.', path: '/x/', cluster: 'c', target: 'http://W.svc:80/' },
      'r',
    );
    assert.deepEqual(validateRoute(once, 'r'), once);
  });

  test('accepts hostnames at the length limits', () => {
    const label = 'a'.repeat(63);
    assert.equal(validateRoute(route(`${label}.test`), 'r').host, `${label}.test`);
    const long = `${'a'.repeat(61)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(63)}`;
    assert.equal(long.length, 253);
    assert.equal(validateRoute(route(long), 'r').host, long);
    assert.equal(validateRoute(route(`*.${long.slice(2)}`), 'r').host.length, 253);
  });

  test('refuses a route that is not a mapping', () => {
    refuses('a.test', 'routes[0] must be a route with host, cluster and target, got "a.test"');
    refuses(null, 'routes[0] must be a route with host, cluster and target, got null');
    refuses([], 'routes[0] must be a route with host, cluster and target, got an array');
  });

  test('refuses an unknown field', () => {
    refuses(
      { ...route('a.test'), paht: '/api' },
      'routes[0].paht is not a route field (expected host, path, cluster, target, serverName, tls)',
    );
  });

  test('refuses bad hosts with the key and the value', () => {
    const message = (got: string) => `routes[2].host must be a hostname or *.suffix, got ${got}`;
    const cases: [unknown, string][] = [
      ['foo bar', '"foo bar"'],
      [undefined, 'undefined'],
      [42, '42'],
      ['', '""'],
      ['*', '"*"'],
      ['*.', '"*."'],
      ['a.*.test', '"a.*.test"'],
      ['*a.test', '"*a.test"'],
      ['**.test', '"**.test"'],
      ['-a.test', '"-a.test"'],
      ['a-.test', '"a-.test"'],
      ['a..test', '"a..test"'],
      ['a.test..', '"a.test.."'],
      ['a_b.test', '"a_b.test"'],
      ['a.test:80', '"a.test:80"'],
      ['[::1]', '"[::1]"'],
      ['\u212Aube.test', '"\u212Aube.test"'],
      [`${'a'.repeat(64)}.test`, `"${'a'.repeat(64)}.test"`],
    ];
    for (const [host, got] of cases) {
      assert.throws(() => validateRoute({ host, cluster: 'c', target: 'http://t:1' }, 'routes[2]'), {
        message: message(got),
      });
    }
    const tooLong = `${'a'.repeat(62)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(63)}`;
    assert.equal(tooLong.length, 254);
    refuses(route(tooLong), `routes[0].host must be a hostname or *.suffix, got "${tooLong}"`);
  });

  test('refuses bad paths', () => {
    const message = (got: string) =>
      'routes[1].path must be a path prefix starting with "/" (no query, fragment, empty or dot segments), ' +
      `got ${got}`;
    for (const path of [
      'api',
      '',
      '//',
      '/api//x',
      '/api?x=1',
      '/api#f',
      '/a b',
      '/./x',
      '/x/..',
      '/%zz',
      '/é',
    ]) {
      refuses(route('a.test', path), message(JSON.stringify(path)), 'routes[1]');
    }
    refuses({ ...route('a.test'), path: 7 }, message('7'), 'routes[1]');
  });

  test('refuses a bad cluster', () => {
    const message = (got: string) =>
      `routes[0].cluster must be a cluster name (printable ASCII, no spaces), got ${got}`;
    refuses({ host: 'a.test', target: 'http://t:1' }, message('undefined'));
    refuses(route('a.test', '/', ''), message('""'));
    refuses(route('a.test', '/', 'my cluster'), message('"my cluster"'));
  });

  test('refuses bad targets, without echoing credentials', () => {
    const message = (got: string) =>
      'routes[0].target must be an http://, https:// or h2c:// URL with a host and port (no path, query or credentials), ' +
      `got ${got}`;
    const cases: [unknown, string][] = [
      ['ftp://web.svc:21', '"ftp://web.svc:21"'],
      ['h2://web.svc:80', '"h2://web.svc:80"'],
      ['https:web.svc', '"https:web.svc"'],
      ['ws://web.svc:80', '"ws://web.svc:80"'],
      ['web.svc:8080', '"web.svc:8080"'],
      ['http:web.svc', '"http:web.svc"'],
      ['http://', '"http://"'],
      ['http://:80', '"http://:80"'],
      ['http://web.svc:0', '"http://web.svc:0"'],
      ['http://web.svc:65536', '"http://web.svc:65536"'],
      ['http://web.svc/api', '"http://web.svc/api"'],
      ['http://web.svc\\api', '"http://web.svc\\\\api"'],
      ['http://web.svc?x=1', '"http://web.svc?x=1"'],
      ['http://web.svc#x', '"http://web.svc#x"'],
      ['http://a$b.svc', '"http://a$b.svc"'],
      ['http://user:secret@web.svc:80', '"http://***@web.svc:80"'],
      [undefined, 'undefined'],
      [{}, 'an object'],
    ];
    for (const [target, got] of cases) {
      refuses({ host: 'a.test', cluster: 'c', target }, message(got));
    }
  });

  test('https:// and h2c:// targets normalize as http:// does, with their default ports', () => {
    const target = (t: string) => validateRoute({ host: 'a.test', cluster: 'c', target: t }, 'r').target;
    assert.equal(target('HTTPS://Api.Shop.SVC:8443/'), 'https://api.shop.svc:8443');
    assert.equal(target('https://api.shop.svc'), 'https://api.shop.svc:443');
    assert.equal(target('H2C://Grpc.Shop.SVC:50051'), 'h2c://grpc.shop.svc:50051');
    assert.equal(target('h2c://grpc.shop.svc'), 'h2c://grpc.shop.svc:80');
    // The same host canonicalization for every scheme (h2c is no special scheme to the URL parser).
    assert.equal(target('h2c://0x7f.1:50051'), 'h2c://127.0.0.1:50051');
    assert.equal(target('h2c://[0:0::1]:50051'), 'h2c://[::1]:50051');
    assert.throws(
      () => validateRoute({ host: 'a.test', cluster: 'c', target: 'h2c://user:pw@grpc.svc:1' }, 'r'),
      (err: unknown) => err instanceof ConfigError && !err.message.includes('pw'),
    );
  });

  test('serverName: a DNS name, lowercased, for https:// targets only', () => {
    const route = validateRoute(
      { host: 'a.test', cluster: 'c', target: 'https://10.0.0.5:8443', serverName: 'DB.Shop.Internal.' },
      'r',
    );
    assert.equal(route.serverName, 'db.shop.internal');
    assert.equal(
      validateRoute({ host: 'a.test', cluster: 'c', target: 'https://x.svc:1' }, 'r').serverName,
      undefined,
    );
    const rule = 'routes[0].serverName must be a DNS name the target certificate carries, got';
    for (const [value, got] of [
      ['10.0.0.5', '"10.0.0.5"'],
      ['[::1]', '"[::1]"'],
      ['a b', '"a b"'],
      ['', '""'],
      [7, '7'],
    ] as const) {
      refuses(
        { host: 'a.test', cluster: 'c', target: 'https://x.svc:1', serverName: value },
        `${rule} ${got}`,
      );
    }
    refuses(
      { host: 'a.test', cluster: 'c', target: 'http://x.svc:1', serverName: 'x.svc' },
      'routes[0].serverName applies only to an https:// target',
    );
  });

  test('normalizes target spellings to http://host:port', () => {
    const target = (t: string) => validateRoute({ host: 'a.test', cluster: 'c', target: t }, 'r').target;
    assert.equal(target('HTTP://Web.Shop.SVC.cluster.local:8080'), 'http://web.shop.svc.cluster.local:8080');
    assert.equal(target('http://my_service:3000/'), 'http://my_service:3000');
    assert.equal(target('http://[0:0::1]'), 'http://[::1]:80');
    assert.equal(target('http://127.1:80'), 'http://127.0.0.1:80');
  });
});

describe('tls: passthrough routes', () => {
  const pass = (host: string, target = 'tcp://ingress.shop.svc:443'): Route => ({
    host,
    cluster: 'c',
    target,
    tls: 'passthrough',
  });

  test('validate to a tcp:// target with path /', () => {
    assert.deepEqual(validateRoute(pass('DB.Example.Test', 'TCP://Ingress.Shop.SVC:443/'), 'r'), {
      host: 'db.example.test',
      path: '/',
      cluster: 'c',
      target: 'tcp://ingress.shop.svc:443',
      tls: 'passthrough',
    });
    assert.equal(validateRoute(pass('a.test', 'tcp://db:80'), 'r').target, 'tcp://db:80');
  });

  test('refuse anything but passthrough, a tcp:// target, a path or a serverName', () => {
    refuses({ ...pass('a.test'), tls: 'terminate' }, 'routes[0].tls must be "passthrough", got "terminate"');
    const rule = 'routes[0].target must be tcp://host:port for a route with tls: passthrough, got';
    refuses(pass('a.test', 'https://x.svc:443'), `${rule} "https://x.svc:443"`);
    refuses(pass('a.test', 'tcp://x.svc'), `${rule} "tcp://x.svc"`);
    refuses(pass('a.test', 'tcp://x.svc:0'), `${rule} "tcp://x.svc:0"`);
    refuses(pass('a.test', 'tcp://u:pw@x.svc:1'), `${rule} "tcp://***@x.svc:1"`);
    refuses(
      { ...pass('a.test'), path: '/api' },
      'routes[0].path must be / for a route with tls: passthrough (it sees no path)',
    );
    refuses(
      { ...pass('a.test'), serverName: 'x.svc' },
      'routes[0].serverName applies only to an https:// target, not to tls: passthrough',
    );
  });

  test('an HTTP route refuses a tcp:// target, saying what takes one', () => {
    refuses(
      { host: 'a.test', cluster: 'c', target: 'tcp://db:5432' },
      'routes[0].target is tcp://, which only a route with tls: passthrough takes (or a tcpRoutes entry)',
    );
  });

  test('HTTP requests never match a passthrough route', () => {
    const table = new RouteTable([pass('db.example.test'), pass('*.pass.test'), route('*.example.test')]);
    assert.equal(which(table, 'db.example.test'), '*.example.test /');
    assert.equal(which(table, 'a.pass.test'), undefined);
  });

  test('passthrough(): the most specific host claims the name', () => {
    const table = new RouteTable([
      pass('db.example.test'),
      pass('*.example.test'),
      route('shop.example.test'),
      route('*.b.example.test'),
      route('mixed.example.test', '/api'),
      pass('mixed.example.test', 'tcp://mixed:1'),
    ]);
    const hit = (sni: string): string | undefined => table.passthrough(sni)?.host;
    assert.equal(hit('db.example.test'), 'db.example.test');
    assert.equal(hit('cart.example.test'), '*.example.test');
    assert.equal(hit('x.y.example.test'), '*.example.test');
    // An HTTP route's host, exact or a longer wildcard, is terminated here.
    assert.equal(hit('shop.example.test'), undefined);
    assert.equal(hit('a.b.example.test'), undefined);
    // At one host, passthrough takes the connection whatever paths HTTP routes have.
    assert.equal(hit('mixed.example.test'), 'mixed.example.test');
    assert.equal(hit('example.test'), undefined);
    assert.equal(hit('other.test'), undefined);
    assert.equal(new RouteTable([route('a.test')]).passthrough('a.test'), undefined);
  });

  test('a passthrough route and an HTTP route on the same host and path repeat each other', () => {
    assert.throws(() => new RouteTable([pass('a.test'), route('a.test')]), /repeats routes\[0\]/);
  });
});
