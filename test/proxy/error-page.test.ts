// The controller's own error pages: one per status it answers with, in the representation the client's
// Accept prefers (RFC 9110 §12.5.1), with the reason escaped and capped.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  type ErrorPage,
  type ErrorPageInput,
  MAX_REASON_LENGTH,
  negotiate,
  renderErrorPage,
} from '../../src/proxy/error-page.js';

const BASE: ErrorPageInput = {
  status: 502,
  code: 'target_unreachable',
  reason: 'the target refused the connection',
  requestId: 'req-1',
};

function render(input: Partial<ErrorPageInput> = {}): ErrorPage {
  return renderErrorPage({ ...BASE, ...input });
}

/** The raw list as name → values, names lowercased. */
function headerMap(page: ErrorPage): Map<string, string[]> {
  assert.equal(page.headers.length % 2, 0, 'a flat list of name, value pairs');
  const map = new Map<string, string[]>();
  for (let i = 0; i < page.headers.length; i += 2) {
    const name = page.headers[i]!.toLowerCase();
    map.set(name, [...(map.get(name) ?? []), page.headers[i + 1]!]);
  }
  return map;
}

function header(page: ErrorPage, name: string): string | undefined {
  const values = headerMap(page).get(name.toLowerCase());
  assert.ok(values === undefined || values.length === 1, `${name} appears once`);
  return values?.[0];
}

function json(page: ErrorPage): { error: Record<string, unknown> } {
  return JSON.parse(page.body.toString('utf8')) as { error: Record<string, unknown> };
}

const STATUSES: ReadonlyArray<[number, string, boolean]> = [
  [400, 'Bad Request', true],
  [404, 'Not Found', false],
  [408, 'Request Timeout', true],
  [413, 'Content Too Large', false],
  [431, 'Request Header Fields Too Large', true],
  [502, 'Bad Gateway', false],
  [503, 'Service Unavailable', false],
  [504, 'Gateway Timeout', false],
  [508, 'Loop Detected', false],
];

describe('renderErrorPage: statuses', () => {
  for (const [status, title, closes] of STATUSES) {
    test(`${status} ${title}`, () => {
      const page = render({ status, reason: `reason for ${status}`, requestId: `id-${status}` });
      assert.equal(page.status, status);
      assert.equal(header(page, 'Connection'), closes ? 'close' : undefined);
      // RFC 9113 §8.2.2: an HTTP/2 stream carries no connection-specific field.
      const h2 = render({ status, reason: 'r', requestId: 'i', http2: true });
      assert.equal(header(h2, 'Connection'), undefined);
      assert.equal(header(page, 'X-Request-Id'), `id-${status}`);
      const html = page.body.toString('utf8');
      assert.match(html, new RegExp(`<title>${status} ${title}</title>`));
      assert.match(html, new RegExp(`<h1>${status} ${title}</h1>`));
      assert.ok(html.includes(`reason for ${status}`));
      assert.ok(html.includes(`id-${status}`));
      const body = json(render({ status, reason: 'r', requestId: 'i', accept: 'application/json' }));
      assert.deepEqual(body, {
        error: { status, title, code: 'target_unreachable', reason: 'r', requestId: 'i' },
      });
    });
  }

  test('the common headers, exactly', () => {
    const page = render();
    assert.deepEqual(page.headers, [
      'Content-Type',
      'text/html; charset=utf-8',
      'Content-Length',
      String(page.body.length),
      'Cache-Control',
      'no-store',
      'X-Content-Type-Options',
      'nosniff',
      'Vary',
      'Accept',
      'X-Request-Id',
      'req-1',
      'Content-Security-Policy',
      "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'",
    ]);
  });

  test('Content-Length counts bytes, not characters', () => {
    const page = render({ reason: 'no route for héllo.example — ünïcode' });
    assert.equal(header(page, 'Content-Length'), String(page.body.length));
    assert.ok(page.body.length > page.body.toString('utf8').length);
  });

  test('a status outside 400..599 is a programming error', () => {
    for (const status of [200, 399, 600, 502.5, Number.NaN]) {
      assert.throws(() => render({ status }), RangeError);
    }
  });

  test('an unlisted error status takes its title from the standard table', () => {
    assert.equal(
      json(render({ status: 500, accept: 'application/json' })).error.title,
      'Internal Server Error',
    );
  });

  test('the HTML page loads nothing and runs nothing', () => {
    const html = render().body.toString('utf8');
    assert.doesNotMatch(html, /<script|<link|<img|<iframe|src=|href=|url\(/i);
  });
});

describe('renderErrorPage: the reason code', () => {
  test('HTML shows the code on a line of its own', () => {
    const html = render({ status: 508, code: 'loop', reason: 'Via loop' }).body.toString('utf8');
    assert.ok(html.includes('<p>Code: <code>loop</code></p>'), html);
  });

  test('every format carries it', () => {
    for (const accept of ['application/json', 'text/plain', 'text/html']) {
      const body = render({ code: 'target_denied', accept }).body.toString('utf8');
      assert.ok(body.includes('target_denied'), `${accept}: ${body}`);
    }
    assert.equal(json(render({ code: 'timeout', accept: 'application/json' })).error.code, 'timeout');
  });
});

describe('renderErrorPage: Accept', () => {
  const CASES: ReadonlyArray<[string | undefined, string]> = [
    [undefined, 'text/html'],
    ['', 'text/html'],
    ['*/*', 'text/html'],
    ['text/html', 'text/html'],
    ['text/*', 'text/html'],
    ['application/json', 'application/json'],
    ['Application/JSON', 'application/json'],
    ['application/problem+json', 'application/json'],
    ['application/vnd.api+json;q=0.8, text/html;q=0.5', 'application/json'],
    ['application/json, */*;q=0.1', 'application/json'],
    ['text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8', 'text/html'], // a browser
    ['application/json;q=0.5, text/html', 'text/html'],
    ['application/json, text/html', 'text/html'], // a tie keeps the HTML default
    ['application/json;q=0.9, text/html;q=0.9', 'text/html'],
    ['application/*', 'application/json'],
    ['text/plain', 'text/plain'],
    ['text/plain;charset=utf-8', 'text/plain'],
    ['text/plain, text/html;q=0', 'text/plain'],
    ['text/*, text/html;q=0', 'text/plain'],
    ['text/plain;q=0.5, application/json;q=0.4', 'text/plain'],
    ['text/html;q=0, */*', 'application/json'], // HTML refused; JSON comes before plain on a tie
    ['application/json;q=0, */*', 'text/html'],
    ['application/json;q=0, application/*', 'text/html'], // the exact range beats the wider one
    ['*/*;q=0', 'text/html'], // nothing acceptable: still a page, never a 406
    ['image/png', 'text/html'],
    ['text/plain;level=1', 'text/html'], // a parameter we do not have does not match
    ['application/json;q=2', 'text/html'], // malformed weight: the element is ignored
    ['application/json;q=0.0001', 'text/html'],
    ['garbage, ;;, /, */json', 'text/html'],
    ['application/json; foo="a,b;q=0"; q=1', 'text/html'], // quotes hide separators; foo is no charset
  ];
  for (const [accept, expected] of CASES) {
    test(`${accept === undefined ? '(absent)' : JSON.stringify(accept)} → ${expected}`, () => {
      const page = render({ accept });
      assert.equal(header(page, 'Content-Type'), `${expected}; charset=utf-8`);
    });
  }

  test('negotiate names the format', () => {
    assert.equal(negotiate('application/json'), 'json');
    assert.equal(negotiate('text/plain'), 'plain');
    assert.equal(negotiate(undefined), 'html');
  });

  test('the JSON body parses to the documented shape', () => {
    const page = render({
      status: 503,
      code: 'no_tunnel',
      reason: 'no agent of cluster "demo" is connected',
      accept: 'application/json',
    });
    assert.deepEqual(json(page), {
      error: {
        status: 503,
        title: 'Service Unavailable',
        code: 'no_tunnel',
        reason: 'no agent of cluster "demo" is connected',
        requestId: 'req-1',
      },
    });
  });

  test('the plain body is four lines: status, reason, code, request id', () => {
    const page = render({
      status: 404,
      code: 'no_route',
      reason: 'no route for host a.test',
      accept: 'text/plain',
    });
    assert.equal(
      page.body.toString('utf8'),
      '404 Not Found\nno route for host a.test\nCode: no_route\nRequest ID: req-1\n',
    );
    assert.equal(header(page, 'Content-Security-Policy'), undefined);
  });
});

describe('renderErrorPage: escaping and limits', () => {
  const HOSTILE = 'no route for host <script>alert("x")</script>&\'';

  test('HTML escapes the reason', () => {
    const html = render({ status: 404, reason: HOSTILE }).body.toString('utf8');
    assert.ok(!html.includes('<script>'));
    assert.ok(html.includes('no route for host &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;'));
  });

  test('HTML escapes the request id', () => {
    const html = render({ requestId: '<b>"id"</b>' }).body.toString('utf8');
    assert.ok(html.includes('&lt;b&gt;&quot;id&quot;&lt;/b&gt;'));
    assert.ok(!html.includes('<b>'));
  });

  test('JSON carries the reason intact but no raw <', () => {
    const page = render({ status: 404, reason: HOSTILE, accept: 'application/json' });
    assert.ok(!page.body.toString('utf8').includes('<'));
    assert.equal(json(page).error.reason, HOSTILE);
  });

  test('control characters cannot add lines', () => {
    const page = render({ reason: 'a\r\nX-Evil: 1\u0000b', accept: 'text/plain' });
    assert.equal(page.body.toString('utf8').split('\n').length, 5); // four lines and the final newline
    assert.ok(page.body.toString('utf8').includes('a  X-Evil: 1 b'));
  });

  test(`the reason is capped at ${MAX_REASON_LENGTH} characters`, () => {
    const long = 'no route for host ' + 'a'.repeat(1000);
    const reason = json(render({ reason: long, accept: 'application/json' })).error.reason as string;
    assert.equal(Array.from(reason).length, MAX_REASON_LENGTH);
    assert.ok(reason.endsWith('\u2026'));
    const exact = 'b'.repeat(MAX_REASON_LENGTH);
    assert.equal(json(render({ reason: exact, accept: 'application/json' })).error.reason, exact);
  });

  test('the cap never splits a surrogate pair', () => {
    const reason = json(render({ reason: '😀'.repeat(400), accept: 'application/json' })).error
      .reason as string;
    assert.equal(reason, '😀'.repeat(MAX_REASON_LENGTH - 1) + '\u2026');
  });

  test('an id that is no valid field value is made one', () => {
    const page = render({ requestId: 'a b\r\nc' });
    assert.equal(header(page, 'X-Request-Id'), 'a_b__c');
    assert.equal(header(render({ requestId: '' }), 'X-Request-Id'), '-');
  });
});

describe('renderErrorPage: HEAD', () => {
  for (const accept of [undefined, 'application/json', 'text/plain']) {
    test(`HEAD has no body but the GET Content-Length (${accept ?? 'html'})`, () => {
      const get = render({ accept, method: 'GET' });
      const head = render({ accept, method: 'HEAD' });
      assert.equal(head.body.length, 0);
      assert.ok(get.body.length > 0);
      assert.deepEqual(head.headers, get.headers);
      assert.equal(header(head, 'Content-Length'), String(get.body.length));
    });
  }
});
