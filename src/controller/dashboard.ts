// The dashboard (DESIGN §3) on the admin listener: a page at `/` and its script, style sheet and icon
// under /dashboard/. These files hold no data and are served without the admin token; the page asks for
// the token and reads everything through the admin API, which wants it (see dashboard/app.ts for the
// session and why it polls).
//
// Every response carries a strict Content-Security-Policy: scripts, styles, images and fetches from this
// origin only, no inline script or style, no framing, no form posting anywhere (the login form is
// handled by the script, so without it the token cannot leave in a form), and Trusted Types with no
// policy, so that any innerHTML in the page throws instead of parsing markup. With nosniff, a browser
// runs app.js only as the JavaScript it is labelled as.
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ICON_SVG, INDEX_HTML, STYLE_CSS } from './dashboard/page.js';

export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
  "require-trusted-types-for 'script'",
  "trusted-types 'none'",
].join('; ');

const HEADERS = {
  'Content-Security-Policy': CONTENT_SECURITY_POLICY,
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Resource-Policy': 'same-origin',
  // Small files, revalidated on every load, so that an upgraded controller serves its own script.
  'Cache-Control': 'no-cache',
};

interface Asset {
  type: string;
  body: () => Buffer;
}

/** Reads a file once, on first use. */
function cached(read: () => Buffer): () => Buffer {
  let body: Buffer | undefined;
  return () => (body ??= read());
}

// app.js is tsc's output of dashboard/app.ts, beside this module in dist/. Its source-map comment is
// left out: the map is not served.
const appJs = cached(() =>
  Buffer.from(
    readFileSync(new URL('./dashboard/app.js', import.meta.url), 'utf8').replace(
      /\n\/\/# sourceMappingURL=\S+\s*$/,
      '\n',
    ),
  ),
);

const ASSETS = new Map<string, Asset>([
  ['/', { type: 'text/html; charset=utf-8', body: cached(() => Buffer.from(INDEX_HTML)) }],
  ['/dashboard/app.js', { type: 'text/javascript; charset=utf-8', body: appJs }],
  ['/dashboard/style.css', { type: 'text/css; charset=utf-8', body: cached(() => Buffer.from(STYLE_CSS)) }],
  ['/dashboard/icon.svg', { type: 'image/svg+xml', body: cached(() => Buffer.from(ICON_SVG)) }],
]);

/** Serves the dashboard's page and files; false when `path` is none of them. */
export function serveDashboard(req: IncomingMessage, res: ServerResponse, path: string): boolean {
  const asset = ASSETS.get(path);
  if (asset === undefined) return false;
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { ...HEADERS, Allow: 'GET, HEAD', 'Content-Type': 'text/plain; charset=utf-8' });
    res.end(`${req.method} is not allowed on ${path}\n`);
    return true;
  }
  let body: Buffer;
  try {
    body = asset.body();
  } catch (err) {
    res.writeHead(500, { ...HEADERS, 'Content-Type': 'text/plain; charset=utf-8' });
    res.end(`the dashboard file ${path} cannot be read: ${(err as Error).message}\n`);
    return true;
  }
  res.writeHead(200, { ...HEADERS, 'Content-Type': asset.type, 'Content-Length': body.length });
  res.end(req.method === 'HEAD' ? undefined : body);
  return true;
}
