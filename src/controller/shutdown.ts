// The controller's drain (DESIGN §5, STYLE.md lesson 7): nothing new is accepted by any front end or
// the tunnel listener; every agent gets GO_AWAY, so it opens no stream here and may dial a replacement
// elsewhere; the requests already accepted run on their streams. When the grace period ends, every
// front end closes the long-lived connections it still holds, which get UPGRADE_CLOSE_MS to finish;
// whatever runs after that is cut with its tunnel.
import type { Logger } from 'pino';
import { SessionError } from '../errors.js';
import { UPGRADE_CLOSE_MS } from '../proxy/upgrade.js';
import type { PublicListener } from './public-listener.js';
import type { TunnelRegistry } from './tunnels.js';

export { UPGRADE_CLOSE_MS };

/** What the drain ends, and in what order. */
export interface Running {
  /** Every public front end, drained alike; closed with the closers at the end. */
  frontEnds: readonly PublicListener[];
  /** The requests in flight on the front ends (the PublicEdge). */
  requests: { readonly inFlight: number; whenIdle(): Promise<void> };
  registry: TunnelRegistry;
  /** The tunnel listener. */
  tunnels: { stopAccepting(): void };
  /**
   * A fleet member's peer side: told first, so that peers stop sending streams here while the ones
   * they sent (counted in `requests`) finish; what is left is cut with the tunnels.
   */
  fleet?: { drain(graceMs: number): Promise<unknown>; destroy(err: Error): void };
  /** Closes the rest once the tunnels are gone: the tunnel and admin listeners, timers. */
  closers: readonly (() => Promise<void>)[];
}

export async function shutdown(running: Running, graceMs: number, logger: Logger): Promise<void> {
  const { frontEnds, requests, registry, tunnels, closers, fleet } = running;
  const live = registry.all();
  logger.info(
    { event: 'stopping', inFlight: requests.inFlight, tunnels: live.length, graceMs },
    'controller stopping',
  );
  const peersDrained = fleet?.drain(graceMs + UPGRADE_CLOSE_MS);
  for (const front of frontEnds) front.startDrain();
  tunnels.stopAccepting();
  const drained = Promise.allSettled([
    ...live.map((t) => t.session.close(graceMs + UPGRADE_CLOSE_MS)),
    peersDrained,
  ]);
  if (!(await idleWithin(requests, graceMs))) {
    let upgrades = 0;
    for (const front of frontEnds) upgrades += front.closeUpgraded();
    logger.info(
      { event: 'grace-ended', inFlight: requests.inFlight, upgrades },
      'grace period ended; closing upgraded connections, then cutting what is left',
    );
    await idleWithin(requests, UPGRADE_CLOSE_MS);
    for (const front of frontEnds) front.destroyUpgraded();
  }
  const cut = new SessionError('SLUICE_ERR_SHUTDOWN', 'the controller stopped: grace period ended');
  for (const tunnel of registry.all()) tunnel.session.destroy(cut);
  fleet?.destroy(cut);
  await drained;
  await Promise.allSettled([...frontEnds.map((front) => front.close()), ...closers.map((close) => close())]);
  logger.info({ event: 'stopped' }, 'controller stopped');
}

/** True once no request is in flight, false when `ms` passed first. */
async function idleWithin(requests: Running['requests'], ms: number): Promise<boolean> {
  if (requests.inFlight === 0) return true;
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([requests.whenIdle().then(() => true), expired]);
  } finally {
    clearTimeout(timer);
  }
}
