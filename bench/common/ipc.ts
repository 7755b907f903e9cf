// The child's side of the IPC between a bench orchestrator and the Node processes it starts: the
// child answers named requests and says when it is ready; the orchestrator's side is proc.ts.

export type Args = Record<string, unknown>;
export type Handler = (args: Args) => unknown;

interface Request {
  type: 'req';
  id: number;
  cmd: string;
  args: Args;
}

/** A message a child sends on its own: readiness (`ready`) or a named event. */
export interface ChildMessage {
  type: 'ready' | 'event' | 'res';
  [key: string]: unknown;
}

declare const gc: (() => void) | undefined;

function rss(args: Args): number {
  if (args.gc === true && typeof gc === 'function') {
    gc();
    gc();
  }
  return process.memoryUsage().rss;
}

/**
 * Answers the orchestrator's requests with `handlers` (plus `rss`). The child exits when the
 * orchestrator goes away, so no process outlives a run.
 */
export function serveIpc(handlers: Record<string, Handler>): void {
  const all: Record<string, Handler> = { rss, ...handlers };
  process.on('message', (msg: Request) => {
    if (msg?.type !== 'req') return;
    const handler = all[msg.cmd];
    Promise.resolve()
      .then(() => {
        if (handler === undefined) throw new Error(`unknown command ${msg.cmd}`);
        return handler(msg.args);
      })
      .then(
        (result) => send({ type: 'res', id: msg.id, ok: true, result }),
        (err: Error) => send({ type: 'res', id: msg.id, ok: false, error: err.stack ?? String(err) }),
      );
  });
  process.on('disconnect', () => process.exit(0));
  // A normal exit on SIGTERM lets --cpu-prof and --heap-prof write their files.
  process.on('SIGTERM', () => process.exit(0));
}

export function send(msg: ChildMessage): void {
  process.send?.(msg);
}

export function sendReady(info: Args): void {
  send({ type: 'ready', ...info });
}
