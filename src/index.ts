// The public library surface: the tunnel session, its transports, options and errors.
export {
  ConfigError,
  ERROR_CODES,
  ProtocolError,
  SessionError,
  SluiceError,
  type SluiceErrorCode,
  StreamResetError,
} from './errors.js';
export { ErrorCode } from './protocol/constants.js';
export {
  type DialOptions,
  dial,
  type ListenOptions,
  listen,
  type TunnelListener,
} from './transport/index.js';
export { resolveSessionOptions, type SessionOptions, type SessionOptionsInput } from './tunnel/options.js';
export {
  type AcceptOptions,
  type AuthResult,
  type ConnectOptions,
  type Hello,
  Session,
  type SessionStats,
} from './tunnel/session.js';
export type { Stream, StreamMeta } from './tunnel/stream.js';
