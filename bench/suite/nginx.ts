// The `nginx` path: one nginx reverse-proxy hop with upstream keep-alive, from a config the bench
// writes into a temp dir of its own (no daemon, no master process, one worker, logs in that dir).
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Proc } from '../common/proc.js';
import type { CertPair } from './cert.js';
import { HOST } from './common.js';
import { binaryOnPath, listensWithin, startOnFreePort } from './ports.js';

const READY_TIMEOUT_MS = 10_000;

/** The nginx binary: on PATH, or in the sbin dirs a non-root PATH often lacks. */
export function nginxBinary(): string | null {
  return binaryOnPath('nginx', ['/usr/sbin', '/usr/local/sbin', '/sbin']);
}

/**
 * The choices that keep the comparison fair are explained in bench/README.md ("nginx"): buffering
 * off both ways so that nginx streams with bounded memory like the other hops (buffered, it would
 * spool a slow reader's response to a temp file), through one 64 KiB buffer each way like the Node
 * hops' reads; keep-alive without a request cap on both sides; no access log.
 */
export function nginxConf(
  dir: string,
  port: number,
  originPort: number,
  fileLimit: number,
  tls: CertPair | null = null,
): string {
  // A proxied connection takes two connection slots and two files. With slots equal to the file
  // limit, nginx ran out of slots about 1,250 short of the files ("worker_connections are not
  // enough"): with more slots than files, the file limit is what binds, as for the Node hops.
  const connections = Math.max(1024, 2 * fileLimit);
  return `# Written by bench/suite/nginx.ts for one bench run.
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile ${fileLimit};
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} warn;

events {
  worker_connections ${connections};
}

http {
  access_log off;
  client_body_temp_path ${join(dir, 'client_body')};
  proxy_temp_path ${join(dir, 'proxy')};
  fastcgi_temp_path ${join(dir, 'fastcgi')};
  uwsgi_temp_path ${join(dir, 'uwsgi')};
  scgi_temp_path ${join(dir, 'scgi')};

  upstream origin {
    server ${HOST}:${originPort};
    keepalive 64;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
  }

  server {
    listen ${HOST}:${port}${tls === null ? '' : ' ssl http2'} default_server backlog=4096;
    server_name _;${tls === null ? '' : tlsLines(tls)}
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_max_body_size 0;

    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_buffer_size 64k;
      proxy_buffers 4 64k;
      proxy_busy_buffers_size 128k;
      client_body_buffer_size 64k;
    }

    location /ws {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header Host $http_host;
      proxy_read_timeout 1h;
      proxy_send_timeout 1h;
    }
  }
}
`;
}

/**
 * The `nginx-tls` path's server block: the bench's certificate, TLS 1.2 and 1.3 as Sluice offers,
 * and ALPN h2 or http/1.1 on the one port (`listen ... ssl http2`), as Sluice's TLS listener does.
 */
function tlsLines(tls: CertPair): string {
  return `
    ssl_certificate ${tls.cert};
    ssl_certificate_key ${tls.key};
    ssl_protocols TLSv1.2 TLSv1.3;`;
}

export interface Nginx {
  proc: Proc;
  port: number;
}

/** Starts nginx in `dir` and resolves once it listens on its port. */
export function startNginx(
  dir: string,
  originPort: number,
  fileLimit: number,
  tls: CertPair | null = null,
): Promise<Nginx> {
  const binary = nginxBinary();
  if (binary === null) throw new Error('nginx not found (apt-get install nginx-light)');
  const conf = join(dir, 'nginx.conf');
  const errorLog = join(dir, 'error.log');
  // nginx cannot listen on port 0.
  return startOnFreePort<Nginx>('nginx', async (port) => {
    await writeFile(conf, nginxConf(dir, port, originPort, fileLimit, tls));
    const proc = new Proc('nginx', binary, ['-p', dir, '-c', conf, '-e', errorLog], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    proc.stderr?.setEncoding('utf8').on('data', (t: string) => (stderr += t));
    if (await listensWithin(proc, port, READY_TIMEOUT_MS)) return { started: { proc, port } };
    await proc.stop(1000);
    return { output: (await readFile(errorLog, 'utf8').catch(() => '')) + stderr };
  });
}
