// The small grammars that several layers check, each defined once: RFC 9110 tokens, DNS labels and
// hostnames, cluster names and tunnel tokens. One definition, so that a name the config accepts is the
// name the admin API, the route table and the agent's allow-list accept too. Pure: no I/O, no imports.
//
// The label patterns are tested before any case mapping: toLowerCase maps some non-ASCII letters to
// ASCII (U+212A KELVIN SIGN becomes "k"), so lowercasing first would let them pass.

/** An RFC 9110 §5.6.2 token: a method, a field name, a parameter name, a Via pseudonym (§7.6.3). */
export const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** RFC 1123 §2.1 label: letters, digits and hyphens, 1 to 63 characters, no hyphen at either end. */
export const DNS_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;

/** A label as names inside a cluster spell it: RFC 1123 plus `_` (Docker Compose's `my_service`). */
export const IN_CLUSTER_LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/i;

/** The longest hostname, without its trailing dot (RFC 1123 §2.1). */
export const MAX_HOSTNAME = 253;

/** A hostname of RFC 1123 labels (no trailing dot, no wildcard). */
export function isHostname(name: string): boolean {
  return name.length <= MAX_HOSTNAME && name.split('.').every((label) => DNS_LABEL.test(label));
}

/** A hostname as a cluster's own DNS spells it: labels may carry `_`. */
export function isInClusterHostname(name: string): boolean {
  return name.length <= MAX_HOSTNAME && name.split('.').every((label) => IN_CLUSTER_LABEL.test(label));
}

// One lowercase DNS label, so that a cluster name can appear in hostnames, metrics and URLs unescaped.
const CLUSTER_NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** What a cluster name must be, for messages: `must be a cluster name: ${CLUSTER_NAME_RULE}`. */
export const CLUSTER_NAME_RULE =
  '1 to 63 lowercase letters, digits and hyphens, with no hyphen at either end';

export function isClusterName(value: unknown): value is string {
  return typeof value === 'string' && CLUSTER_NAME.test(value);
}

const PLAIN_TOKEN = /^[\x21-\x7e]{16,}$/;
const TOKEN_DIGEST = /^sha256:[0-9a-f]{64}$/;

/**
 * A secret as a person or a file gives it (a tunnel token, the admin token, the peer secret): at least
 * 16 visible ASCII characters, no spaces. 16 characters also mean that replacing it in a message
 * cannot mangle the rest.
 */
export function isPlainToken(value: string): boolean {
  return PLAIN_TOKEN.test(value);
}

/** A token's digest as configs and stores keep it: `sha256:` and 64 lowercase hex digits. */
export function isTokenDigest(value: string): boolean {
  return TOKEN_DIGEST.test(value);
}
