/**
 * Python's `json.dump(value, indent=N)` text (what Barman prints for `sync-info`), for documents
 * a Barman peer reads and a script may compare byte for byte:
 *   - separators `,` + newline and `: ` (Python's with an indent), `[]` / `{}` when empty;
 *   - ensure_ascii: every character outside printable ASCII (and DEL) as `\uXXXX`;
 *   - floats as Python's repr (`2.0`, `1e-05`, `1e+16`): a PyFloat is a float, a JS number an int
 *     when integral (as the catalog's Python literals distinguish them);
 *   - key order as given (Maps or plain objects in insertion order).
 */
import { PyFloat, PyTuple, type PyValue } from '../catalog/pyliteral.js';
import { pyFloatStr } from './pytime.js';

/** A value the serializer accepts: Python literals, plain objects and arrays of them. */
export type PyJsonValue = PyValue | undefined | readonly PyJsonValue[] | { readonly [key: string]: PyJsonValue } | ReadonlyMap<string, PyJsonValue>;

/** A JSON string literal with ensure_ascii (lower-case hex, as Python writes it). */
export function pyJsonString(s: string): string {
  return JSON.stringify(s).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function numberText(x: number): string {
  if (Number.isInteger(x)) return BigInt(x).toString();
  return floatText(x);
}

function floatText(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'Infinity';
  if (x === -Infinity) return '-Infinity';
  return pyFloatStr(x);
}

function keyText(k: unknown): string {
  // json.dumps turns non-string keys into strings (None → "null", True → "true", numbers → repr).
  if (typeof k === 'string') return k;
  if (k === null) return 'null';
  if (typeof k === 'boolean') return k ? 'true' : 'false';
  if (typeof k === 'number') return numberText(k);
  if (k instanceof PyFloat) return floatText(k.value);
  throw new TypeError(`keys must be str, int, float, bool or None, not ${String(k)}`);
}

/** `json.dumps(value, indent=indent)` (no trailing newline). */
export function pyJsonDumps(value: PyJsonValue, indent = 4): string {
  const pad = (level: number) => `\n${' '.repeat(indent * level)}`;
  const dump = (v: PyJsonValue | unknown, level: number): string => {
    if (v === null || v === undefined) return 'null';
    switch (typeof v) {
      case 'boolean':
        return v ? 'true' : 'false';
      case 'number':
        return numberText(v);
      case 'bigint':
        return v.toString();
      case 'string':
        return pyJsonString(v);
      default:
        break;
    }
    if (v instanceof PyFloat) return floatText(v.value);
    const items = v instanceof PyTuple ? v.items : Array.isArray(v) ? (v as readonly unknown[]) : null;
    if (items) {
      if (items.length === 0) return '[]';
      return `[${items.map((x) => `${pad(level + 1)}${dump(x, level + 1)}`).join(',')}${pad(level)}]`;
    }
    const entries: [unknown, unknown][] = v instanceof Map ? [...(v as Map<unknown, unknown>).entries()] : Object.entries(v as object);
    if (entries.length === 0) return '{}';
    return `{${entries.map(([k, x]) => `${pad(level + 1)}${pyJsonString(keyText(k))}: ${dump(x, level + 1)}`).join(',')}${pad(level)}}`;
  };
  return dump(value, 0);
}
