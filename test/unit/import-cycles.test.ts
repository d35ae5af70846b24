/**
 * The architecture rule "no import cycles" (docs/CONVENTIONS.md): every runtime import between
 * the modules of src/ (type-only imports excepted, they vanish at run time) forms a DAG.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const srcDir = path.join(root, 'src');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sources(p);
    return e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

/** Runtime imports and re-exports of relative modules (`import type` / `export type` skipped). */
export function runtimeImports(file: string, text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/^(?:import|export)\s+(?!type\b)[^;]*?from\s+'(\.[^']+)\.js'/gms)) {
    out.push(path.resolve(path.dirname(file), `${m[1] as string}.ts`));
  }
  return out;
}

/** The strongly connected components with more than one module (Tarjan). */
function cycles(graph: Map<string, string[]>): string[][] {
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v) as number, low.get(w) as number));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v) as number, index.get(w) as number));
    }
    if (low.get(v) === index.get(v)) {
      const comp: string[] = [];
      for (;;) {
        const w = stack.pop() as string;
        onStack.delete(w);
        comp.push(w);
        if (w === v) break;
      }
      if (comp.length > 1) found.push(comp.map((f) => path.relative(root, f)).sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return found;
}

describe('module structure', () => {
  it('src/ has no import cycle', () => {
    const graph = new Map<string, string[]>();
    for (const f of sources(srcDir)) graph.set(f, runtimeImports(f, readFileSync(f, 'utf8')));
    assert.ok(graph.size > 100, `only ${graph.size} modules found under ${srcDir}`);
    assert.deepEqual(cycles(graph), []);
  });

  it('finds a cycle and ignores type-only imports', () => {
    const a = path.join(srcDir, 'a.ts');
    const b = path.join(srcDir, 'b.ts');
    assert.deepEqual(runtimeImports(a, "import { x } from './b.js';\nimport type { Y } from './c.js';\n"), [b]);
    assert.deepEqual(cycles(new Map([[a, [b]], [b, [a]]])), [['src/a.ts', 'src/b.ts']]);
    assert.deepEqual(cycles(new Map([[a, [b]], [b, []]])), []);
  });
});
