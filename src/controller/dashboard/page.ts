// The dashboard's page, style sheet and icon, as strings: they ship in dist/ with the rest of the code, so
// nothing has to be copied at build time or found beside the package at run time. The script is
// app.ts, which tsc compiles like any other module. The page holds no inline script or style (the
// Content-Security-Policy allows neither) and no data: app.js fills the tables with textContent. The
// constants are typed `string`, or the declaration files would carry each text again as a literal type.

/** Tags the CSS literal so that Prettier formats it as CSS. */
const css = String.raw;

export const INDEX_HTML: string = /* HTML */ `<!doctype html>
  <html lang="en">
    <head>
      <meta charset="utf-8" />
      <meta name="viewport" content="width=device-width, initial-scale=1" />
      <meta name="referrer" content="no-referrer" />
      <title>Sluice dashboard</title>
      <link rel="icon" type="image/svg+xml" href="/dashboard/icon.svg" />
      <link rel="stylesheet" href="/dashboard/style.css" />
      <script type="module" src="/dashboard/app.js"></script>
    </head>
    <body>
      <header>
        <div class="brand"><img src="/dashboard/icon.svg" alt="" width="22" height="22" /> Sluice</div>
        <dl id="counts" hidden>
          <div>
            <dt>clusters</dt>
            <dd id="count-clusters">0</dd>
          </div>
          <div>
            <dt>tunnels</dt>
            <dd id="count-tunnels">0</dd>
          </div>
          <div>
            <dt>routes</dt>
            <dd id="count-routes">0</dd>
          </div>
          <div>
            <dt>req/s</dt>
            <dd id="count-rate">0</dd>
          </div>
        </dl>
        <span id="status" class="status" hidden></span>
        <button id="logout" type="button" hidden>Log out</button>
      </header>
      <main>
        <noscript><p class="error">The dashboard needs JavaScript.</p></noscript>
        <section id="login" hidden>
          <form id="login-form" method="post" autocomplete="off">
            <h1>Controller dashboard</h1>
            <p>
              Sign in with the admin token: the file <code>admin-token</code> in the controller's data
              directory (<code>./.sluice/admin-token</code> by default), or
              <code>SLUICE_ADMIN_TOKEN</code> when the controller runs with it. <code>sluice dev</code> prints
              its token when it starts.
            </p>
            <!-- For password managers: the token belongs to no user name, so they file it under this. -->
            <input type="text" name="username" value="admin" autocomplete="username" hidden />
            <label for="token">Admin token</label>
            <input
              id="token"
              name="token"
              type="password"
              autocomplete="current-password"
              spellcheck="false"
              required
            />
            <p id="login-error" class="error" role="alert" hidden></p>
            <button id="login-submit" type="submit">Sign in</button>
          </form>
        </section>
        <section id="dashboard" hidden>
          <h2>Clusters and tunnels</h2>
          <table id="tunnels">
            <thead>
              <tr>
                <th>Agent</th>
                <th>Replica</th>
                <th>Version</th>
                <th>Remote address</th>
                <th>Connected since</th>
                <th class="num">RTT</th>
                <th class="num">Streams</th>
                <th class="num" title="Bytes received from the agent on this tunnel">In</th>
                <th class="num" title="Bytes sent to the agent on this tunnel">Out</th>
              </tr>
            </thead>
          </table>

          <div id="fleet-view" hidden>
            <h2>Fleet</h2>
            <p class="note">
              The controllers sharing this one's Redis, as its presence view has them: this one first. A
              controller without a tunnel for a cluster serves it through one that has.
            </p>
            <table id="fleet">
              <thead>
                <tr>
                  <th>Instance</th>
                  <th>Peer address</th>
                  <th>Started</th>
                  <th>State</th>
                  <th class="num" title="Peer sessions this controller holds to it">Sessions</th>
                  <th>Clusters (tunnels)</th>
                </tr>
              </thead>
              <tbody></tbody>
            </table>
          </div>

          <h2>Routes</h2>
          <p class="note">
            Over the last <span id="window">10</span> s: <b>req/s</b> is the requests that finished in that
            window divided by its length (a WebSocket counts when it closes); <b>5xx</b> is the share answered
            with a 5xx status, Sluice's own 502, 503 and 504 included; <b>failed</b> is the share whose answer
            broke off after it began, or never came though the client waited.
          </p>
          <table id="routes">
            <thead>
              <tr>
                <th>Host</th>
                <th>Path</th>
                <th>Cluster</th>
                <th>Target</th>
                <th class="num">req/s</th>
                <th class="num">5xx</th>
                <th class="num">Failed</th>
              </tr>
            </thead>
            <tbody></tbody>
          </table>

          <h2>TCP and passthrough routes</h2>
          <p class="note">
            Since each route was added: a TCP route by the address it listens on, a TLS passthrough route by
            its host. <b>Refused</b> is the connections turned away at a limit (tcp.maxConnectionsPerClient or
            tcp.maxConnectionsPerRoute); the bytes include the open connections' so far.
          </p>
          <table id="tcp-routes">
            <thead>
              <tr>
                <th>Kind</th>
                <th>Route</th>
                <th>Cluster</th>
                <th>Target</th>
                <th class="num">Open</th>
                <th class="num">Total</th>
                <th class="num">Refused</th>
                <th class="num" title="Bytes from clients">In</th>
                <th class="num" title="Bytes to clients">Out</th>
              </tr>
            </thead>
            <tbody></tbody>
          </table>

          <h2>Last 100 requests</h2>
          <p class="note">Newest first. A request shows once it has finished.</p>
          <table id="requests">
            <thead>
              <tr>
                <th>Time</th>
                <th>Method</th>
                <th>Host</th>
                <th>Path</th>
                <th class="num">Status</th>
                <th class="num">Duration</th>
                <th class="num" title="Request bytes from the client">In</th>
                <th class="num" title="Response bytes to the client">Out</th>
                <th>Request id</th>
              </tr>
            </thead>
            <tbody></tbody>
          </table>

          <h2>Last 100 TCP connections</h2>
          <p class="note">
            Newest first, TCP routes and TLS passthrough together. A connection shows once it has closed.
          </p>
          <table id="connections">
            <thead>
              <tr>
                <th>Time</th>
                <th>Client</th>
                <th>Route</th>
                <th>Target</th>
                <th class="num">Duration</th>
                <th class="num" title="Bytes from the client">In</th>
                <th class="num" title="Bytes to the client">Out</th>
                <th>Outcome</th>
              </tr>
            </thead>
            <tbody></tbody>
          </table>
        </section>
      </main>
    </body>
  </html>`;

export const STYLE_CSS: string = css`
  :root {
    color-scheme: light dark;
    --bg: #f6f7f9;
    --panel: #ffffff;
    --text: #1d2430;
    --muted: #667085;
    --line: #e4e7ec;
    --head: #0f2a3d;
    --accent: #1a7fb5;
    --ok: #157f3b;
    --warn: #a15c00;
    --bad: #c0262d;
    font:
      14px/1.45 system-ui,
      -apple-system,
      'Segoe UI',
      Roboto,
      sans-serif;
  }
  @media (prefers-color-scheme: dark) {
    :root {
      --bg: #11161d;
      --panel: #181f28;
      --text: #e3e8ef;
      --muted: #98a2b3;
      --line: #2a3441;
      --head: #0b1620;
      --accent: #5cb8e6;
      --ok: #4cc47a;
      --warn: #f0a640;
      --bad: #ff6b6b;
    }
  }
  * {
    box-sizing: border-box;
  }
  body {
    margin: 0;
    background: var(--bg);
    color: var(--text);
  }
  header {
    display: flex;
    align-items: center;
    gap: 24px;
    padding: 10px 24px;
    background: var(--head);
    color: #f1f5f9;
  }
  .brand {
    display: flex;
    align-items: center;
    gap: 8px;
    font-weight: 600;
    font-size: 17px;
  }
  #counts {
    display: flex;
    gap: 20px;
    margin: 0;
  }
  #counts[hidden] {
    display: none;
  }
  #counts div {
    display: flex;
    align-items: baseline;
    gap: 6px;
  }
  #counts dt {
    color: #9fb3c8;
    order: 2;
  }
  #counts dd {
    margin: 0;
    font-weight: 600;
    font-variant-numeric: tabular-nums;
  }
  .status {
    margin-left: auto;
    color: #9fb3c8;
    font-size: 13px;
  }
  .status::before {
    content: '';
    display: inline-block;
    width: 8px;
    height: 8px;
    margin-right: 6px;
    border-radius: 50%;
    background: #4cc47a;
  }
  .status.stale::before {
    background: #f0a640;
  }
  header button {
    margin-left: 0;
  }
  button {
    font: inherit;
    padding: 5px 14px;
    border: 1px solid var(--line);
    border-radius: 6px;
    background: var(--panel);
    color: var(--text);
    cursor: pointer;
  }
  header button {
    background: transparent;
    color: #f1f5f9;
    border-color: #38546b;
  }
  main {
    padding: 8px 24px 32px;
    max-width: 1400px;
  }
  h1 {
    font-size: 20px;
    margin: 0 0 8px;
  }
  h2 {
    font-size: 15px;
    margin: 24px 0 8px;
  }
  .note {
    color: var(--muted);
    margin: -4px 0 10px;
    max-width: 100ch;
  }
  #login form {
    max-width: 440px;
    margin: 64px auto;
    padding: 24px 28px;
    background: var(--panel);
    border: 1px solid var(--line);
    border-radius: 10px;
  }
  #login p {
    color: var(--muted);
  }
  label {
    display: block;
    font-weight: 600;
    margin-bottom: 4px;
  }
  input {
    width: 100%;
    font:
      13px ui-monospace,
      SFMono-Regular,
      Menlo,
      monospace;
    padding: 7px 9px;
    border: 1px solid var(--line);
    border-radius: 6px;
    background: var(--bg);
    color: var(--text);
  }
  #login button {
    margin-top: 12px;
    background: var(--accent);
    border-color: var(--accent);
    color: #fff;
  }
  .error {
    color: var(--bad);
    font-weight: 600;
  }
  #login p.error {
    color: var(--bad);
  }
  table {
    width: 100%;
    border-collapse: collapse;
    background: var(--panel);
    border: 1px solid var(--line);
    border-radius: 8px;
  }
  th,
  td {
    padding: 5px 10px;
    text-align: left;
    border-bottom: 1px solid var(--line);
    white-space: nowrap;
  }
  th {
    font-weight: 600;
    font-size: 12px;
    color: var(--muted);
    text-transform: uppercase;
    letter-spacing: 0.03em;
  }
  td {
    font-variant-numeric: tabular-nums;
  }
  .num {
    text-align: right;
  }
  .mono {
    font-family: ui-monospace, SFMono-Regular, Menlo, monospace;
    font-size: 12.5px;
  }
  .clip {
    max-width: 28ch;
    overflow: hidden;
    text-overflow: ellipsis;
  }
  tr.group td {
    background: var(--bg);
    font-weight: 600;
    padding-top: 8px;
  }
  tr.group .muted {
    font-weight: 400;
  }
  .muted,
  .empty td {
    color: var(--muted);
  }
  .badge {
    display: inline-block;
    margin-left: 6px;
    padding: 0 6px;
    border-radius: 4px;
    font-size: 11px;
    font-weight: 600;
    background: var(--warn);
    color: #fff;
  }
  .s2 {
    color: var(--ok);
  }
  .s3 {
    color: var(--accent);
  }
  .s4,
  .warn {
    color: var(--warn);
  }
  tr.self td:first-child {
    font-weight: 600;
  }
  .s5,
  .s0,
  .bad {
    color: var(--bad);
  }
  td.s2,
  td.s3,
  td.s4,
  td.s5,
  td.s0 {
    font-weight: 600;
  }
`;

/** The icon: three water lines through a gate. */
export const ICON_SVG: string = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">
<rect width="32" height="32" rx="7" fill="#1a7fb5"/>
<rect x="7" y="5" width="4" height="22" rx="1.5" fill="#e6f4fb"/>
<path d="M13 11c3 0 3-2 6-2s3 2 6 2M13 17c3 0 3-2 6-2s3 2 6 2M13 23c3 0 3-2 6-2s3 2 6 2" fill="none" stroke="#e6f4fb" stroke-width="2.2" stroke-linecap="round"/>
</svg>
`;
