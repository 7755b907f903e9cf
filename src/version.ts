// The package's version, read once from package.json beside dist/: the CLI prints it, the agent sends
// it in HELLO (docs/protocol.md §4) and the controller shows it for each tunnel. From dist/src/ the
// package root is two folders up, in a checkout, an npm install and the image alike.
import { readFileSync } from 'node:fs';

let cached: string | undefined;

/** The `version` of Sluice's package.json, e.g. `0.1.0`. */
export function sluiceVersion(): string {
  if (cached === undefined) {
    const url = new URL('../../package.json', import.meta.url);
    const pkg = JSON.parse(readFileSync(url, 'utf8')) as { version?: unknown };
    if (typeof pkg.version !== 'string') throw new Error(`${url.pathname} has no version`);
    cached = pkg.version;
  }
  return cached;
}
