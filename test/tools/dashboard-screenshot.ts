// Makes docs/dashboard.png, the picture of the dashboard in docs/admin.md: a controller with three clusters
// (two with agents, one without), a few routes (one whose target is down, one whose cluster has no
// agent), a TCP route to a small echo service with a few connections (one of them turned away at the
// per-client limit), a mix of traffic for a few seconds, then Chromium signs in and takes the page.
//
//   npm run build && node dist/test/tools/dashboard-screenshot.js [OUT.png]
//
// Not a test (nothing asserts); it runs everything in this process, on loopback ports the system picks.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { connect as tcpConnect, createServer as createTcpServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { pino } from 'pino';
import { type AgentHandle, startAgent } from '../../src/agent/agent.js';
import { loadAgentConfig } from '../../src/agent/config.js';
import { startController } from '../../src/controller/controller.js';
import { inProcessControllerConfig } from '../helpers/controller-config.js';
import { listenOnLoopback } from '../helpers/listen.js';
import { ask } from '../helpers/sluice-procs.js';
import { within } from '../helpers/wait.js';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const OUT = resolve(process.argv[2] ?? join(REPO, 'docs', 'dashboard.png'));
const ADMIN_TOKEN = 'screenshot-admin-token-0123456789';
const TRAFFIC_MS = 6000;
const silent = pino({ level: 'silent' });

/** A small web service: pages, assets, a JSON API whose checkout fails now and then. */
function service(req: IncomingMessage, res: ServerResponse): void {
  const path = (req.url ?? '/').split('?', 1)[0]!;
  req.resume();
  if (path === '/api/checkout' && Math.random() < 0.25) {
    res.writeHead(500, { 'Content-Type': 'application/json' }).end('{"error":"payment backend"}');
  } else if (path.startsWith('/api/')) {
    res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ items: [1, 2, 3] }));
  } else if (path.startsWith('/assets/')) {
    res.writeHead(200, { 'Content-Type': 'text/javascript' }).end('x'.repeat(48_000 + path.length * 997));
  } else if (path === '/' || path.startsWith('/posts/') || path.startsWith('/products/')) {
    res.writeHead(200, { 'Content-Type': 'text/html' }).end('<p>page</p>'.repeat(900));
  } else {
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found');
  }
}

async function closedPort(): Promise<number> {
  const server = createTcpServer();
  const port = await listenOnLoopback(server);
  await new Promise<void>((done) => server.close(() => done()));
  return port;
}

const REQUESTS: [weight: number, host: string, path: string, method?: string][] = [
  [6, 'shop.example.com', '/'],
  [5, 'shop.example.com', '/products/4711'],
  [6, 'shop.example.com', '/assets/app.js'],
  [7, 'shop.example.com', '/api/cart'],
  [3, 'shop.example.com', '/api/checkout', 'POST'],
  [5, 'blog.example.com', '/'],
  [4, 'blog.example.com', '/posts/rolling-restarts-without-a-dropped-request'],
  [1, 'legacy.example.com', '/orders'],
  [1, 'pr-118.preview.example.com', '/'],
  [1, '203.0.113.7', '/wp-login.php'],
];

function pick(): (typeof REQUESTS)[number] {
  const total = REQUESTS.reduce((n, [w]) => n + w, 0);
  let r = Math.random() * total;
  for (const entry of REQUESTS) {
    r -= entry[0];
    if (r < 0) return entry;
  }
  return REQUESTS[0]!;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-screenshot-'));
  const web = createServer(service);
  const webPort = await listenOnLoopback(web);
  const down = await closedPort();
  const target = `http://127.0.0.1:${webPort}`;
  const echo = createTcpServer((s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  const echoPort = await listenOnLoopback(echo);
  const yaml = `
tunnel:
  pingInterval: 1s
clusters:
  - name: shop
    tokens: ["shop-agent-token-0123456789"]
  - name: blog
    tokens: ["blog-agent-token-0123456789"]
  - name: staging
    tokens: ["staging-agent-token-0123456789"]
routes:
  - { host: shop.example.com, cluster: shop, target: "${target}" }
  - { host: shop.example.com, path: /api, cluster: shop, target: "${target}" }
  - { host: legacy.example.com, cluster: shop, target: "http://127.0.0.1:${down}" }
  - { host: blog.example.com, cluster: blog, target: "${target}" }
  - { host: "*.preview.example.com", cluster: staging, target: "${target}" }
tcpRoutes:
  - { listen: "127.0.0.1:0", cluster: shop, target: "tcp://127.0.0.1:${echoPort}" }
tcp:
  maxConnectionsPerClient: 3
`;
  const controller = await startController(
    inProcessControllerConfig(yaml, dir, { SLUICE_ADMIN_TOKEN: ADMIN_TOKEN }),
    silent,
  );
  const agents: AgentHandle[] = [];
  for (const [cluster, name, replicas] of [
    ['shop', 'shop-gateway', 2],
    ['blog', 'blog-agent', 1],
  ] as const) {
    for (let i = 0; i < replicas; i++) {
      const agent = await startAgent(
        loadAgentConfig({
          flags: {
            controller: controller.tunnelUrl,
            token: `${cluster}-agent-token-0123456789`,
            name,
            tunnels: '2',
            allow: ['127.0.0.1:*'],
            pingInterval: '1s',
          },
          env: {},
        }),
        silent,
      );
      agents.push(agent);
      await within(agent.whenUp(), 10_000, `${name} to connect`);
    }
  }

  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1080 } });
    await page.goto(`${controller.adminUrl}/`);
    await page.fill('#token', ADMIN_TOKEN);
    await page.click('#login-submit');
    await page.locator('#dashboard').waitFor();

    // About 25 requests a second, a few at a time, for TRAFFIC_MS.
    const port = Number(new URL(controller.publicUrl).port);
    const end = Date.now() + TRAFFIC_MS;
    while (Date.now() < end) {
      await Promise.all(
        Array.from({ length: 5 }, () => {
          const [, host, path, method] = pick();
          return ask({ port, host, path, method: method ?? 'GET' }).catch(() => undefined);
        }),
      );
      await new Promise((done) => setTimeout(done, 200));
    }
    // A few TCP connections: some done, three held open, and one more turned away at the limit.
    const tcpPort = Number(controller.tcpRoutes.list()[0]!.address.split(':')[1]);
    const held: Socket[] = [];
    for (let i = 0; i < 8; i++) {
      const c = tcpConnect(tcpPort, '127.0.0.1');
      c.on('error', () => {});
      await new Promise((done) => c.once('connect', done));
      c.write('x'.repeat(1000 + i * 4000));
      await new Promise((done) => c.once('data', done));
      if (held.length < 3 && i >= 5) held.push(c);
      else
        await new Promise((done) => {
          c.once('close', done);
          c.end();
        });
      await new Promise((done) => setTimeout(done, 50));
    }
    const over = tcpConnect(tcpPort, '127.0.0.1');
    over.on('error', () => {});
    await new Promise((done) => over.once('close', done));
    // Two polls later the page shows the last of it.
    await page.waitForTimeout(2200);
    // The viewport, not the full page: the first rows of the last requests say enough.
    await page.screenshot({ path: OUT });
    process.stdout.write(`wrote ${OUT}\n`);
  } finally {
    await browser.close();
    echo.close();
    for (const agent of agents) await agent.close(0);
    await controller.close(0);
    web.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
