// Session options: one schema holds the defaults and the bounds, validation fails fast with the exact
// key, unknown keys are rejected, and the resolved options are frozen (STYLE.md lesson 6).
import { z } from 'zod';
import { formatBytes, formatMs } from '../config/values.js';
import { ConfigError } from '../errors.js';
import { Defaults, Limits } from '../protocol/constants.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

function bounded(min: number, max: number, fmt: (n: number) => string, fallback: number) {
  return z
    .number()
    .refine((v) => Number.isInteger(v) && v >= min && v <= max, {
      message: `must be an integer between ${fmt(min)} and ${fmt(max)}`,
    })
    .default(fallback);
}

const bytes = (min: number, max: number, fallback: number) => bounded(min, max, formatBytes, fallback);
const duration = (min: number, max: number, fallback: number) => bounded(min, max, formatMs, fallback);
const count = (min: number, max: number, fallback: number) => bounded(min, max, String, fallback);

const schema = z
  .strictObject({
    /** Initial per-stream receive window announced in the handshake, in bytes. */
    window: bytes(Limits.MIN_WINDOW, Limits.MAX_WINDOW, Defaults.WINDOW),
    /** Largest DATA payload this side sends in one frame. */
    maxFrameData: bytes(1 * KiB, Limits.MAX_DATA_PAYLOAD, Defaults.MAX_FRAME_DATA),
    /** Streams open at once; the peer's SYNs above this are reset with OVERLOAD. */
    maxStreams: count(1, 2 ** 31 - 1, Defaults.MAX_STREAMS),
    /** Local opens awaiting the peer's ACK. */
    maxPendingOpens: count(1, 2 ** 31 - 1, Defaults.MAX_PENDING_OPENS),
    /** Bound on credit granted but not yet returned, over all streams of the session. */
    sessionBuffer: bytes(Limits.MIN_WINDOW, 64 * GiB, Defaults.SESSION_BUFFER),
    pingInterval: duration(100, 5 * 60_000, Defaults.PING_INTERVAL_MS),
    pingTimeout: duration(100, 30 * 60_000, Defaults.PING_TIMEOUT_MS),
    writeTimeout: duration(100, 30 * 60_000, Defaults.WRITE_TIMEOUT_MS),
    handshakeTimeout: duration(100, 5 * 60_000, Defaults.HANDSHAKE_TIMEOUT_MS),
    openTimeout: duration(100, 30 * 60_000, Defaults.OPEN_TIMEOUT_MS),
    gracePeriod: duration(0, 60 * 60_000, Defaults.GRACE_PERIOD_MS),
  })
  .superRefine((o, ctx) => {
    if (o.pingTimeout < o.pingInterval) {
      ctx.addIssue({
        code: 'custom',
        path: ['pingTimeout'],
        message: 'must be at least tunnel.pingInterval',
      });
    }
    if (o.sessionBuffer < o.window) {
      ctx.addIssue({ code: 'custom', path: ['sessionBuffer'], message: 'must be at least tunnel.window' });
    }
  });

export type SessionOptions = Readonly<z.output<typeof schema>>;
export type SessionOptionsInput = z.input<typeof schema>;

/** Validates and freezes session options. Throws ConfigError naming the first key at fault. */
export function resolveSessionOptions(input: SessionOptionsInput = {}, prefix = 'tunnel'): SessionOptions {
  const result = schema.safeParse(input);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    if (issue.code === 'unrecognized_keys') {
      throw new ConfigError(`${prefix}.${issue.keys[0]}`, 'is not a known option');
    }
    const key = `${prefix}.${issue.path.join('.')}`;
    const message = issue.code === 'invalid_type' ? `must be a number` : issue.message;
    throw new ConfigError(key, message);
  }
  return Object.freeze(result.data);
}

export const DEFAULT_SESSION_OPTIONS: SessionOptions = resolveSessionOptions();
