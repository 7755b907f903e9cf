// Keeps the imports of src/ pointing one way (STYLE.md, "Shape"): protocol ← tunnel ← proxy ←
// controller / agent ← cli, with shared leaves that every layer may use and that use no layer above
// protocol. The test parses every module under src/ with the TypeScript parser, so `import type`,
// `export … from`, dynamic `import('…')` and `import('…').T` in a type all count, and fails on an
// import cycle (type-only ones included: they are the ones that turn into real ones) or on an import
// against the table below. Each failure names the importing file, its line and the import.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, posix, relative, sep } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

interface Layer {
  readonly name: string;
  /** A layer may import layers of lower rank. Equal ranks with different names never import each other. */
  readonly rank: number;
  /** Every layer may import a leaf; a leaf imports only leaves and protocol. */
  readonly leaf?: boolean;
  /** No HTTP module: the tunnel knows nothing of what its streams carry. */
  readonly noHttp?: boolean;
}

const PROTOCOL: Layer = { name: 'protocol', rank: 1, noHttp: true };
const LEAF = (name: string): Layer => ({ name, rank: 0, leaf: true });

/**
 * Where each file under src/ sits; the first matching prefix wins, and a file matching none fails the
 * test, so a new top-level folder has to be placed here first.
 *
 * | path            | layer      | why                                                                |
 * | --------------- | ---------- | ------------------------------------------------------------------ |
 * | protocol/       | protocol   | the wire: constants and the pure codec (docs/protocol.md)          |
 * | tunnel/         | tunnel     | sessions and streams over any Duplex, HELLO and its caps           |
 * | transport/      | transport  | beside tunnel: dials and listens for the Duplex a session runs on; |
 * |                 |            | may use node:http (a WebSocket begins as an HTTP upgrade)          |
 * | proxy/          | proxy      | HTTP over a stream: envelope, headers, meta, the edge's exchange   |
 * | controller/     | controller | the public gateway; never imports agent                            |
 * | agent/          | agent      | dials out and delivers to targets; never imports controller        |
 * | cli/, dev/      | cli        | entry points: argv to config; `sluice dev` composes both sides     |
 * | index.ts        | library    | the public library surface, beside cli                             |
 * | errors.ts       | leaf       | SluiceError and its codes; reads protocol's wire codes             |
 * | config/         | leaf       | value parsers shared by every configuration                        |
 * | store/          | leaf       | the controller's state and the records it is made of              |
 * | logging.ts      | leaf       | logger helpers                                                     |
 * | metrics.ts      | leaf       | the Prometheus registry and the /metrics answer                    |
 * | diagnostics.ts  | leaf       | the memory report                                                  |
 * | version.ts      | leaf       | the package version (CLI, HELLO, status)                           |
 * | syntax.ts       | leaf       | small grammars: RFC 9110 token, DNS labels, cluster names, tokens  |
 * | ops.ts          | leaf       | /healthz, /readyz, /metrics, /debug/memory and the listen helper   |
 * | collections.ts  | leaf       | IdTable and LiveSet: a Map and a Set for heavy churn               |
 */
const LAYERS: readonly (readonly [prefix: string, layer: Layer])[] = [
  ['protocol/', PROTOCOL],
  ['tunnel/', { name: 'tunnel', rank: 2, noHttp: true }],
  ['transport/', { name: 'transport', rank: 2 }],
  ['proxy/', { name: 'proxy', rank: 3 }],
  ['controller/', { name: 'controller', rank: 4 }],
  ['agent/', { name: 'agent', rank: 4 }],
  ['cli/', { name: 'cli', rank: 5 }],
  ['dev/', { name: 'cli', rank: 5 }],
  ['index.ts', { name: 'library', rank: 5 }],
  ['errors.ts', LEAF('errors')],
  ['config/', LEAF('config')],
  ['store/', LEAF('store')],
  ['logging.ts', LEAF('logging')],
  ['metrics.ts', LEAF('metrics')],
  ['diagnostics.ts', LEAF('diagnostics')],
  ['version.ts', LEAF('version')],
  ['syntax.ts', LEAF('syntax')],
  ['ops.ts', LEAF('ops')],
  ['collections.ts', LEAF('collections')],
];

const HTTP_MODULES = new Set(['http', 'https', 'http2', 'node:http', 'node:https', 'node:http2']);

interface Import {
  /** 1-based line of the import in the importing file. */
  readonly line: number;
  readonly specifier: string;
}

/** Every module `source` imports or re-exports, statically or dynamically, in types too. */
function importsOf(fileName: string, source: string): Import[] {
  const file = ts.createSourceFile(fileName, source, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const found: Import[] = [];
  const add = (node: ts.Node, specifier: ts.Node | undefined): void => {
    if (specifier === undefined || !ts.isStringLiteralLike(specifier)) return;
    const line = file.getLineAndCharacterOfPosition(node.getStart(file)).line + 1;
    found.push({ line, specifier: specifier.text });
  };
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) add(node, node.moduleSpecifier);
    else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference))
      add(node, node.moduleReference.expression);
    else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword)
      add(node, node.arguments[0]);
    else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument))
      add(node, node.argument.literal);
    ts.forEachChild(node, visit);
  };
  visit(file);
  return found;
}

function layerOf(path: string): Layer | undefined {
  return LAYERS.find(([prefix]) => path === prefix || path.startsWith(prefix))?.[1];
}

function mayImport(from: Layer, to: Layer): boolean {
  if (from.name === to.name || to.leaf === true) return true;
  if (from.leaf === true) return to === PROTOCOL;
  return to.rank < from.rank;
}

function why(from: Layer, to: Layer): string {
  if (from.leaf === true) return `${from.name} is a leaf: it imports only leaves and protocol`;
  if (from.rank === to.rank) return `${from.name} and ${to.name} never import each other`;
  return `${to.name} is above ${from.name}`;
}

interface Edge extends Import {
  readonly from: string;
  readonly to: string;
}

/**
 * What is wrong with the modules in `sources` (paths relative to src/, with `/`, mapped to their
 * text): imports against the layer table, imports of no file under src/, and import cycles. Empty
 * when nothing is.
 */
function violations(sources: ReadonlyMap<string, string>): string[] {
  const problems: string[] = [];
  const edges = new Map<string, Edge[]>();
  for (const [from, source] of sources) {
    const fromLayer = layerOf(from);
    if (fromLayer === undefined) problems.push(`src/${from} is in no layer: add its folder to LAYERS`);
    const out: Edge[] = [];
    edges.set(from, out);
    for (const imp of importsOf(from, source)) {
      const where = `src/${from}:${imp.line} imports '${imp.specifier}'`;
      if (!imp.specifier.startsWith('.')) {
        if (fromLayer?.noHttp === true && HTTP_MODULES.has(imp.specifier))
          problems.push(`${where}: ${fromLayer.name} never imports an HTTP module`);
        continue;
      }
      const to = resolve(from, imp.specifier, sources);
      if (to === undefined) {
        problems.push(`${where}: no such module under src/`);
        continue;
      }
      out.push({ ...imp, from, to });
      const toLayer = layerOf(to);
      if (fromLayer !== undefined && toLayer !== undefined && !mayImport(fromLayer, toLayer))
        problems.push(`${where} (${toLayer.name}): ${why(fromLayer, toLayer)}`);
    }
  }
  for (const component of cycles(edges)) {
    const members = new Set(component);
    const inside = component.flatMap((file) => edges.get(file)!.filter((e) => members.has(e.to)));
    const lines = inside.map((e) => `  src/${e.from}:${e.line} imports '${e.specifier}'`);
    problems.push(`import cycle among ${component.map((f) => `src/${f}`).join(', ')}:\n${lines.join('\n')}`);
  }
  return problems;
}

/** The file under src/ that `specifier` names from `from`: `./x.js` is the source `./x.ts`. */
function resolve(from: string, specifier: string, sources: ReadonlyMap<string, string>): string | undefined {
  const joined = posix.normalize(posix.join(posix.dirname(from), specifier));
  const candidates = [joined.replace(/\.js$/, '.ts'), joined, `${joined}.ts`, `${joined}/index.ts`];
  return candidates.find((c) => !c.startsWith('../') && sources.has(c));
}

/** The strongly connected components with more than one module, or a module importing itself (Tarjan). */
function cycles(edges: ReadonlyMap<string, readonly Edge[]>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const connect = (v: string): void => {
    index.set(v, index.size);
    low.set(v, index.get(v)!);
    stack.push(v);
    onStack.add(v);
    for (const { to } of edges.get(v) ?? []) {
      if (!index.has(to)) {
        connect(to);
        low.set(v, Math.min(low.get(v)!, low.get(to)!));
      } else if (onStack.has(to)) low.set(v, Math.min(low.get(v)!, index.get(to)!));
    }
    if (low.get(v) !== index.get(v)) return;
    const component: string[] = [];
    let w: string;
    do {
      w = stack.pop()!;
      onStack.delete(w);
      component.push(w);
    } while (w !== v);
    const selfLoop = (edges.get(v) ?? []).some((e) => e.to === v);
    if (component.length > 1 || selfLoop) found.push(component.sort());
  };
  for (const v of [...edges.keys()].sort()) if (!index.has(v)) connect(v);
  return found;
}

function readSources(dir: string): Map<string, string> {
  const sources = new Map<string, string>();
  const walk = (at: string): void => {
    for (const entry of readdirSync(at, { withFileTypes: true })) {
      const path = join(at, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts'))
        sources.set(relative(dir, path).split(sep).join('/'), readFileSync(path, 'utf8'));
    }
  };
  walk(dir);
  return sources;
}

// The compiled test is dist/test/architecture.test.js: the sources are two levels up.
const SRC = fileURLToPath(new URL('../../src/', import.meta.url));

describe('the import graph of src/', () => {
  const sources = readSources(SRC);

  test('was found', () => {
    assert.ok(sources.has('index.ts') && sources.has('tunnel/session.ts'), `no sources under ${SRC}`);
    assert.ok(sources.size > 40, `only ${sources.size} modules under ${SRC}`);
  });

  test('has no cycle and no import against the layers', () => {
    const found = violations(sources);
    assert.equal(found.length, 0, `${found.length} problems:\n${found.join('\n')}`);
  });
});

describe('the import checker', () => {
  test('sees every form of import', () => {
    const source = [
      "import { a } from './a.js';",
      "import type { B } from './b.js';",
      'import {',
      '  c,',
      "} from './c.js';",
      "export { d } from './d.js';",
      "export type * from './e.js';",
      "import './f.js';",
      "const g = await import('./g.js');",
      "type H = import('./h.js').H;",
      "// import { x } from './not-an-import.js';",
      'const text = "import { y } from \'./not-either.js\'";',
    ].join('\n');
    const found = importsOf('x.ts', source).map((i) => `${i.line} ${i.specifier}`);
    const expected = ['1 ./a.js', '2 ./b.js', '3 ./c.js', '6 ./d.js', '7 ./e.js', '8 ./f.js'];
    assert.deepEqual(found, [...expected, '9 ./g.js', '10 ./h.js']);
  });

  test('reports cycles, upward imports, agent↔controller, HTTP in the tunnel and unknown modules', () => {
    const found = violations(
      new Map([
        ['protocol/codec.ts', "import type { Session } from '../tunnel/session.js';"],
        ['tunnel/session.ts', "import { encode } from '../protocol/codec.js';\nimport 'node:http';"],
        ['tunnel/stream.ts', "type S = import('../errors.js').E;"],
        ['errors.ts', "export { x } from './config/values.js';"],
        ['config/values.ts', "import { y } from '../proxy/meta.js';"],
        ['proxy/meta.ts', ''],
        ['agent/agent.ts', "const t = await import('../controller/tunnels.js');"],
        ['controller/tunnels.ts', "import { gone } from './missing.js';"],
        ['elsewhere/thing.ts', ''],
      ]),
    );
    const expected = [
      "src/protocol/codec.ts:1 imports '../tunnel/session.js' (tunnel): tunnel is above protocol",
      "src/tunnel/session.ts:2 imports 'node:http': tunnel never imports an HTTP module",
      "src/config/values.ts:1 imports '../proxy/meta.js' (proxy): config is a leaf: it imports only leaves and protocol",
      "src/agent/agent.ts:1 imports '../controller/tunnels.js' (controller): agent and controller never import each other",
      "src/controller/tunnels.ts:1 imports './missing.js': no such module under src/",
      'src/elsewhere/thing.ts is in no layer: add its folder to LAYERS',
      'import cycle among src/protocol/codec.ts, src/tunnel/session.ts:\n' +
        "  src/protocol/codec.ts:1 imports '../tunnel/session.js'\n" +
        "  src/tunnel/session.ts:1 imports '../protocol/codec.js'",
    ];
    assert.deepEqual([...found].sort(), [...expected].sort());
  });

  test('reports a cycle of type-only imports through three modules, and a module importing itself', () => {
    const found = violations(
      new Map([
        ['controller/a.ts', "import type { B } from './b.js';"],
        ['controller/b.ts', "import type { C } from './c.js';"],
        ['controller/c.ts', "export type { A } from './a.js';"],
        ['controller/self.ts', "import type { Me } from './self.js';"],
      ]),
    );
    assert.deepEqual(found, [
      'import cycle among src/controller/a.ts, src/controller/b.ts, src/controller/c.ts:\n' +
        "  src/controller/a.ts:1 imports './b.js'\n" +
        "  src/controller/b.ts:1 imports './c.js'\n" +
        "  src/controller/c.ts:1 imports './a.js'",
      "import cycle among src/controller/self.ts:\n  src/controller/self.ts:1 imports './self.js'",
    ]);
  });
});
