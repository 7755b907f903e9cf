// A pino logger that keeps its lines as objects, for asserting what a service said (an in-process
// controller or agent): its events, their fields, their order.
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';

export interface CapturedLog {
  readonly lines: Record<string, unknown>[];
  readonly logger: Logger;
  /** The lines whose `event` is `event`, in order. */
  events(event: string): Record<string, unknown>[];
}

export function captureLog(level = 'info'): CapturedLog {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line !== '') lines.push(JSON.parse(line));
      cb();
    },
  });
  return {
    lines,
    logger: pino({ level }, sink) as unknown as Logger,
    events: (event) => lines.filter((l) => l.event === event),
  };
}
