// The pages the controller answers with when it cannot, or must not, relay a response (DESIGN §3):
// 404 no route, 503 no agent, 502 target refused or stream broke, 504 timeout, 508 loop, and the 4xx
// of a request too malformed to route. Each carries a reason, its stable code and the request id, in the
// representation the client's Accept prefers (RFC 9110 §12.5.1). Pure: no I/O, no sockets.
import { STATUS_CODES } from 'node:http';
import type { ReasonCode } from '../errors.js';
import { TOKEN } from '../syntax.js';

export interface ErrorPageInput {
  /** 400..599. */
  status: number;
  /** Why, as a stable code (docs/errors.md) for scripts to match on. */
  code: ReasonCode;
  /** Why, in one sentence. Ours, but it may quote client input such as a Host header. */
  reason: string;
  requestId: string;
  /** The client's Accept header as received; absent means HTML. */
  accept?: string | undefined;
  /** The request method; for HEAD the body is left out (RFC 9110 §9.3.2). */
  method?: string;
  /**
   * The page goes on an HTTP/2 stream: no connection-specific field (RFC 9113 §8.2.2), and so no
   * `Connection: close`; a stream's framing is its own, and the next one starts clean.
   */
  http2?: boolean;
}

export interface ErrorPage {
  status: number;
  /** Flat raw list, as `writeHead` takes it: name, value, name, value, ... */
  headers: string[];
  /** Empty for HEAD. */
  body: Buffer;
}

/** Longest reason shown, in code points; longer ones end in an ellipsis. */
export const MAX_REASON_LENGTH = 300;

// RFC 9110 §15 titles; Node's table still says "Payload Too Large" for 413.
const TITLES: Readonly<Record<number, string>> = {
  400: 'Bad Request',
  404: 'Not Found',
  408: 'Request Timeout',
  413: 'Content Too Large',
  431: 'Request Header Fields Too Large',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
  508: 'Loop Detected',
};

// After these the controller cannot tell where the next request on the connection starts (a bad or
// half-read head, a body that never came), so the connection goes.
const CLOSES_CONNECTION: ReadonlySet<number> = new Set([400, 408, 431]);

export type ErrorPageFormat = 'html' | 'json' | 'plain';

const CONTENT_TYPES: Readonly<Record<ErrorPageFormat, string>> = {
  html: 'text/html; charset=utf-8',
  json: 'application/json; charset=utf-8',
  plain: 'text/plain; charset=utf-8',
};

// The page allows no script, frame, form or external load; only its own inline style.
const HTML_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'";

export function renderErrorPage(input: ErrorPageInput): ErrorPage {
  const { status } = input;
  if (!Number.isInteger(status) || status < 400 || status > 599) {
    throw new RangeError(`error page status must be an integer from 400 to 599, got ${String(status)}`);
  }
  const page: PageText = {
    status,
    title: TITLES[status] ?? STATUS_CODES[status] ?? 'Error',
    code: input.code,
    reason: cleanReason(input.reason),
    requestId: cleanRequestId(input.requestId),
  };
  const kind = negotiate(input.accept);
  const full = Buffer.from(RENDER[kind](page), 'utf8');
  const headers = [
    'Content-Type',
    CONTENT_TYPES[kind],
    'Content-Length',
    String(full.length),
    'Cache-Control',
    'no-store',
    'X-Content-Type-Options',
    'nosniff',
    'Vary',
    'Accept',
    'X-Request-Id',
    page.requestId,
  ];
  if (kind === 'html') headers.push('Content-Security-Policy', HTML_CSP);
  if (CLOSES_CONNECTION.has(status) && input.http2 !== true) headers.push('Connection', 'close');
  // HEAD: the same header section as GET, Content-Length included, and no content (RFC 9110 §9.3.2).
  const body = input.method === 'HEAD' ? Buffer.alloc(0) : full;
  return { status, headers, body };
}

interface PageText {
  status: number;
  title: string;
  code: ReasonCode;
  reason: string;
  requestId: string;
}

const RENDER: Readonly<Record<ErrorPageFormat, (page: PageText) => string>> = {
  html: renderHtml,
  json: renderJson,
  plain: renderPlain,
};

function renderJson(page: PageText): string {
  const { status, title, code, reason, requestId } = page;
  // `<` as \u003c: the same JSON value, but nothing in it can read as markup if some client sniffs it.
  const json = JSON.stringify({ error: { status, title, code, reason, requestId } });
  return json.replace(/</g, '\\u003c') + '\n';
}

function renderPlain(page: PageText): string {
  return `${page.status} ${page.title}\n${page.reason}\nCode: ${page.code}\nRequest ID: ${page.requestId}\n`;
}

function renderHtml(page: PageText): string {
  const heading = escapeHtml(`${page.status} ${page.title}`);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${heading}</title>
<style>
body{font:16px/1.5 system-ui,sans-serif;margin:3rem auto;max-width:40rem;padding:0 1rem;color:#222}
h1{font-size:1.5rem;margin:0 0 1rem}
code{background:#f3f3f3;padding:.1rem .3rem;border-radius:3px}
footer{margin-top:2rem;color:#666;font-size:.875rem}
</style>
</head>
<body>
<h1>${heading}</h1>
<p>${escapeHtml(page.reason)}</p>
<p>Code: <code>${escapeHtml(page.code)}</code></p>
<p>Request ID: <code>${escapeHtml(page.requestId)}</code></p>
<footer>Sluice</footer>
</body>
</html>
`;
}

const HTML_ESCAPES: Readonly<Record<string, string>> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]!);
}

// Control characters would break the plain page's three lines (and a terminal showing it); the cap
// counts code points so a surrogate pair is never split.
function cleanReason(reason: string): string {
  const points = Array.from(reason.replace(/[\p{Cc}\u2028\u2029]/gu, ' '));
  if (points.length <= MAX_REASON_LENGTH) return points.join('');
  return points.slice(0, MAX_REASON_LENGTH - 1).join('') + '\u2026';
}

// The id goes into a header field, so it must be a valid field value. Ids from `chooseRequestId` are
// visible ASCII already; anything else is made so rather than failing on the error path.
function cleanRequestId(id: string): string {
  const visible = id.replace(/[^!-~]/g, '_').slice(0, 200);
  return visible === '' ? '-' : visible;
}

// --- Accept (RFC 9110 §12.5.1) ---

export interface MediaRange {
  type: string;
  subtype: string;
  /** Parameters before q, lowercased names. */
  params: Map<string, string>;
  q: number;
}

// What each representation is, for matching against the ranges.
const OFFERS: ReadonlyArray<{ kind: ErrorPageFormat; type: string; subtype: string }> = [
  { kind: 'html', type: 'text', subtype: 'html' },
  { kind: 'json', type: 'application', subtype: 'json' },
  { kind: 'plain', type: 'text', subtype: 'plain' },
];

// Ties go to the earlier kind: HTML is the default, and JSON must be preferred by q to win over it.
const TIE_ORDER: readonly ErrorPageFormat[] = ['html', 'json', 'plain'];

// Bounds the work an absurd header can cause; a real Accept has a handful of ranges.
const MAX_RANGES = 64;

/** Which representation to send. Nothing acceptable (all q=0) still gets HTML: RFC 9110 §12.5.1
 *  lets a server disregard Accept rather than answer 406, and an error page should never be a 406. */
export function negotiate(accept: string | undefined): ErrorPageFormat {
  if (accept === undefined || accept.trim() === '') return 'html';
  const ranges = parseAccept(accept);
  if (ranges.length === 0) return 'html';
  const q: Record<ErrorPageFormat, number> = { html: 0, json: 0, plain: 0 };
  for (const offer of OFFERS) q[offer.kind] = qualityOf(offer.type, offer.subtype, ranges);
  // Any structured-syntax +json type the client names (application/problem+json, ...) is a request
  // for JSON (RFC 6839 §3.1); the page is served as application/json all the same.
  for (const range of ranges) {
    if (range.subtype.endsWith('+json')) q.json = Math.max(q.json, range.q);
  }
  let best: ErrorPageFormat = 'html';
  for (const kind of TIE_ORDER) if (q[kind] > q[best]) best = kind;
  return q[best] > 0 ? best : 'html';
}

// The most specific range that matches decides (RFC 9110 §12.5.1): type/subtype;params over
// type/subtype over type/* over */*. Our representations carry only charset=utf-8.
function qualityOf(type: string, subtype: string, ranges: readonly MediaRange[]): number {
  let bestRank = -1;
  let quality = 0;
  for (const range of ranges) {
    const rank = matchRank(range, type, subtype);
    if (rank > bestRank || (rank === bestRank && range.q > quality)) {
      bestRank = rank;
      quality = range.q;
    }
  }
  return bestRank < 0 ? 0 : quality;
}

function matchRank(range: MediaRange, type: string, subtype: string): number {
  if (range.type === '*') return range.subtype === '*' ? 0 : -1;
  if (range.type !== type) return -1;
  if (range.subtype === '*') return 1;
  if (range.subtype !== subtype) return -1;
  if (range.params.size === 0) return 2;
  for (const [name, value] of range.params) {
    if (name !== 'charset' || value.toLowerCase() !== 'utf-8') return -1;
  }
  return 3;
}

const QVALUE = /^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$/;

/** The well-formed ranges of an Accept value; a malformed element is skipped, not fatal. */
export function parseAccept(accept: string): MediaRange[] {
  const ranges: MediaRange[] = [];
  for (const element of splitOutsideQuotes(accept, ',')) {
    if (ranges.length >= MAX_RANGES) break;
    const range = parseRange(element);
    if (range !== undefined) ranges.push(range);
  }
  return ranges;
}

function parseRange(element: string): MediaRange | undefined {
  const [mediaType = '', ...paramParts] = splitOutsideQuotes(element, ';').map((s) => s.trim());
  const slash = mediaType.indexOf('/');
  const type = mediaType.slice(0, slash).toLowerCase();
  const subtype = mediaType.slice(slash + 1).toLowerCase();
  if (slash < 0 || !TOKEN.test(type) || !TOKEN.test(subtype)) return undefined;
  if (type === '*' && subtype !== '*') return undefined;
  const params = new Map<string, string>();
  let q = 1;
  for (const part of paramParts) {
    const eq = part.indexOf('=');
    if (eq <= 0) return undefined;
    const name = part.slice(0, eq).trim().toLowerCase();
    const value = unquote(part.slice(eq + 1).trim());
    if (name === 'q') {
      if (!QVALUE.test(value)) return undefined;
      q = Number(value);
      break; // what follows the weight are accept-ext parameters, which do not select a type
    }
    params.set(name, value);
  }
  return { type, subtype, params, q };
}

function splitOutsideQuotes(text: string, separator: string): string[] {
  const parts: string[] = [];
  let start = 0;
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted && c === '\\') i++;
    else if (c === '"') quoted = !quoted;
    else if (!quoted && c === separator) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(text.slice(start));
  return parts.filter((p) => p.trim() !== '');
}

function unquote(value: string): string {
  if (value.length < 2 || !value.startsWith('"') || !value.endsWith('"')) return value;
  return value.slice(1, -1).replace(/\\(.)/g, '$1');
}
