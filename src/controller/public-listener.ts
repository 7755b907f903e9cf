// What every public front end is to the controller (frp's `Proxy`, STYLE.md lesson 12): a listener on
// the public side that takes clients in and sends what they want down streams the ClusterDispatcher
// opens. The HTTP/1.1 listener (http-listener.ts) is the first; TLS with HTTP/2, a TCP route or SNI
// passthrough would each be another file implementing this, and shutdown() drains them all alike.

/**
 * One public front end, bound and serving. The drain calls, in order: startDrain() when the controller
 * begins to stop; closeUpgraded() when the grace period ends, then destroyUpgraded() UPGRADE_CLOSE_MS
 * later; close() once the tunnels are gone.
 */
export interface PublicListener {
  /** Where it listens, as actually bound: `http://host:port` for the HTTP listener. */
  readonly url: string;
  /**
   * Stops accepting connections and lets the ones it holds wind down: no new requests on kept-alive
   * connections, idle ones closed now. What is already running goes on.
   */
  startDrain(): void;
  /**
   * Ends every long-lived connection (an upgraded one, a TCP relay) with an orderly close; returns how
   * many there were.
   */
  closeUpgraded(): number;
  /** Cuts the long-lived connections that did not finish the close closeUpgraded() began. */
  destroyUpgraded(): void;
  /** Closes the listener and every connection it still holds. */
  close(): Promise<void>;
}
