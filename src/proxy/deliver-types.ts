// What the agent side's delivery (deliver.ts, deliver-upgrade.ts) tells the agent, declared apart from
// both files so that each can name it without importing the other.

/** Told once of every stream this agent served, when it is over: for metrics. */
export interface DeliverObserver {
  /**
   * `status`: the target's answer (101 for a switched upgrade), 0 when none came. `reset`: the wire code
   * this agent reset the stream with, or -1. `err`: the error the stream failed with, if it did.
   */
  streamDone(kind: 'http' | 'upgrade', status: number, reset: number, err: Error | undefined): void;
}
