// `sluice dev` (and `npm start`): a controller with embedded defaults, an agent connected to it and the
// demo service behind it, all in one process (DESIGN §5). The agent token is made up per run and never
// leaves the process. Its state (clusters, tokens, routes) is kept in memory, and so is its admin token
// (SLUICE_ADMIN_TOKEN, or one made up per run and shown on start). The one file it writes is the
// self-signed certificate of its HTTPS listener (certificate.ts), which a browser may be told to trust.
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { ConfigError } from '../errors.js';
import { readinessLogger } from '../logging.js';
import { startAgent } from '../agent/agent.js';
import { loadAgentConfig } from '../agent/config.js';
import { startController } from '../controller/controller.js';
import { ensureDevCertificate } from './certificate.js';
import { controllerConfig, type DevConfig } from './config.js';
import { startDemoService } from './demo.js';

export interface DevHandle {
  readonly publicUrl: string;
  /** http://demo.localhost:PORT/, the demo through the tunnel. */
  readonly demoUrl: string;
  /** https://demo.localhost:PORT/, the demo over TLS (HTTP/2 or 1.1); null with --https-listen off. */
  readonly demoHttpsUrl: string | null;
  /** The certificate file to trust for demoHttpsUrl; null with --https-listen off. */
  readonly certFile: string | null;
  readonly adminUrl: string | null;
  /** The admin API's bearer token. */
  readonly adminToken: string;
  close(): Promise<void>;
}

export const DEV_HOST = 'demo.localhost';
export const DEV_CLUSTER = 'dev';

export async function startDev(dev: DevConfig, logger: Logger): Promise<DevHandle> {
  const demo = await startDemoService();
  const token = randomBytes(24).toString('base64url');
  const config = controllerConfig(dev, {
    clusters: [{ name: DEV_CLUSTER, tokens: [token] }],
    routes: [{ host: DEV_HOST, path: '/', cluster: DEV_CLUSTER, target: demo.url }],
  });
  const closers: (() => Promise<void>)[] = [() => demo.close()];
  const closeAll = async () => {
    for (const close of closers.reverse()) await close().catch(() => {});
  };
  try {
    // Before the controller, which reads the files at its start.
    const cert =
      dev.httpsListen === null
        ? null
        : await ensureDevCertificate(dev.dataDir, logger.child({ role: 'dev' }));
    const controller = await startController(config, logger.child({ role: 'controller' })).catch(
      (err: unknown) => Promise.reject(inDevTerms(err)),
    );
    closers.push(() => controller.close(1000));
    const agent = await startAgent(
      loadAgentConfig({
        flags: {
          controller: controller.tunnelUrl,
          token,
          name: 'dev-agent',
          allow: [`127.0.0.1:${demo.port}`],
          logLevel: dev.logLevel,
        },
        env: {},
        overrides: { replica: 'dev' },
      }),
      logger.child({ role: 'agent' }),
    );
    closers.push(() => agent.close(1000));
    // Ready means the demo answers: wait for a tunnel, so the first request is not a 503.
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('the dev agent did not connect within 10 s')), 10_000);
    });
    await Promise.race([agent.whenUp(), late]).finally(() => clearTimeout(timer));
    const port = new URL(controller.publicUrl).port;
    const demoUrl = `http://${DEV_HOST}:${port}/`;
    const demoHttps =
      controller.tlsUrl === null ? null : `https://${DEV_HOST}:${new URL(controller.tlsUrl).port}/`;
    readinessLogger(logger).info(
      { event: 'dev-ready', demo: demoUrl, demoHttps, admin: controller.adminUrl, target: demo.url },
      'sluice dev ready',
    );
    return {
      publicUrl: controller.publicUrl,
      demoUrl,
      demoHttpsUrl: demoHttps,
      certFile: cert?.cert ?? null,
      adminUrl: controller.adminUrl,
      adminToken: dev.adminToken,
      close: closeAll,
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

/**
 * A controller error about its TLS listener, named as dev's flag: `httpsListen 127.0.0.1:8443 cannot
 * be bound` says what to change, where `tls.listen` names a setting dev has not got.
 */
function inDevTerms(err: unknown): unknown {
  if (!(err instanceof ConfigError) || err.key !== 'tls.listen') return err;
  const said = err.message.slice(err.key.length + 1);
  return new ConfigError('httpsListen', `${said} (--https-listen)`, err.code, { cause: err });
}
