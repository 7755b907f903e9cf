// The open metadata of a proxied stream (docs/http-over-streams.md, "Open metadata"). The controller
// builds it; the agent validates it, since a stream's metadata is input from across the tunnel.
import { z } from 'zod';

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/; // RFC 9110 §5.6.2, a method name
// The request-target as sent on the agent's request line: origin-form or `*` (RFC 9112 §3.2). No
// whitespace or control bytes, which would split the request line.
const REQUEST_TARGET = /^(?:\/[!-~]*|\*)$/;

const headSchema = z.strictObject({
  method: z.string().regex(TOKEN).max(64),
  path: z
    .string()
    .regex(REQUEST_TARGET)
    .max(64 * 1024),
  version: z.string().max(8),
  headers: z
    .array(z.string())
    .max(2 * 10_000)
    .refine((list) => list.length % 2 === 0, 'must hold name, value pairs'),
  /**
   * The client's body is chunked (Transfer-Encoding, which is hop-by-hop and so not in `headers`):
   * the agent must frame it as chunked too, or it would reach the target without a length.
   */
  chunked: z.boolean().optional(),
});

const metaSchema = z.strictObject({
  kind: z.enum(['http', 'upgrade']),
  target: z.string().max(2048),
  client: z.string().max(128),
  requestId: z.string().max(200),
  head: headSchema,
});

export type RequestHead = z.infer<typeof headSchema>;
export type HttpStreamMeta = z.infer<typeof metaSchema>;

/** The metadata as an HttpStreamMeta, or a one-line reason it is not one. */
export function parseStreamMeta(
  meta: unknown,
): { ok: true; meta: HttpStreamMeta } | { ok: false; reason: string } {
  const result = metaSchema.safeParse(meta);
  if (result.success) return { ok: true, meta: result.data };
  const issue = result.error.issues[0]!;
  return { ok: false, reason: `stream metadata ${issue.path.join('.') || '(root)'}: ${issue.message}` };
}
