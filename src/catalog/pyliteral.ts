/**
 * Python literals as Barman stores them in backup.info (tablespaces, copy_stats, included_files,
 * backup_label, snapshots_info): a writer reproducing Python 3 `repr()` and a reader accepting the
 * safe subset of `ast.literal_eval` that such values use.
 *
 * Representation (chosen so that parse → repr gives back the exact text):
 *   None → null, True/False → boolean, str → string,
 *   int → number (bigint when outside the safe integer range),
 *   float → PyFloat (keeps float-ness: `12.0` stays `12.0`; a non-integral JS number is also
 *           written as a float, but the reader always returns PyFloat),
 *   list → array, tuple → PyTuple, dict → Map (insertion order, any hashable key).
 */

import { pyFloatStr } from '../util/pytime.js';
import { BarmanError } from '../util/errors.js';

/** A Python float. Wrapping keeps `12.0` distinct from the int `12`. */
export class PyFloat {
  constructor(readonly value: number) {}

  valueOf(): number {
    return this.value;
  }

  toString(): string {
    return pyFloatStr(this.value);
  }
}

/** A Python tuple (written `(a, b)` / `(a,)`), distinct from a list. */
export class PyTuple {
  readonly items: PyValue[];

  constructor(items: PyValue[]) {
    this.items = items;
  }
}

export type PyDict = Map<PyValue, PyValue>;

export type PyValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | PyFloat
  | PyTuple
  | PyValue[]
  | Map<PyValue, PyValue>;

export const pyFloat = (x: number): PyFloat => new PyFloat(x);
export const pyTuple = (...items: PyValue[]): PyTuple => new PyTuple(items);

/** A dict from entries or from a plain object (mind JS ordering of integer-like object keys). */
export function pyDict(init: Iterable<readonly [PyValue, PyValue]> | Record<string, PyValue>): PyDict {
  if (Symbol.iterator in init) return new Map(init as Iterable<readonly [PyValue, PyValue]>);
  return new Map(Object.entries(init));
}

// ---------------------------------------------------------------------------------------------
// Writer

/**
 * Characters Python's `str.isprintable()` rejects: categories C* and Z* (ASCII space aside).
 * Node's Unicode tables may be newer than the Python that wrote a file, so a character assigned
 * in a recent Unicode version can be printed as-is here where an older Python escaped it; the
 * reader accepts both forms.
 */
const NON_PRINTABLE = /[\p{C}\p{Z}]/u;

const hex = (cp: number, width: number): string => cp.toString(16).padStart(width, '0');

/** Python 3 `repr(str)`. */
export function pyStrRepr(s: string): string {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of s) {
    const cp = ch.codePointAt(0) ?? 0;
    if (ch === quote || ch === '\\') out += `\\${ch}`;
    else if (ch === '\t') out += '\\t';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (cp < 0x20 || cp === 0x7f) out += `\\x${hex(cp, 2)}`;
    else if (cp < 0x7f) out += ch;
    else if (!NON_PRINTABLE.test(ch)) out += ch;
    else if (cp <= 0xff) out += `\\x${hex(cp, 2)}`;
    else if (cp <= 0xffff) out += `\\u${hex(cp, 4)}`;
    else out += `\\U${hex(cp, 8)}`;
  }
  return out + quote;
}

/** Python 3 `repr()` of a value. */
export function pyRepr(value: PyValue): string {
  if (value === null) return 'None';
  switch (typeof value) {
    case 'boolean':
      return value ? 'True' : 'False';
    case 'number':
      // integral JS numbers are Python ints; BigInt avoids "1e+21" for large ones
      return Number.isInteger(value) ? BigInt(value).toString() : pyFloatStr(value);
    case 'bigint':
      return value.toString();
    case 'string':
      return pyStrRepr(value);
    default:
      break;
  }
  if (value instanceof PyFloat) return pyFloatStr(value.value);
  if (value instanceof PyTuple) {
    const items = value.items.map(pyRepr);
    return items.length === 1 ? `(${items[0]},)` : `(${items.join(', ')})`;
  }
  if (Array.isArray(value)) return `[${value.map(pyRepr).join(', ')}]`;
  if (value instanceof Map) {
    const parts: string[] = [];
    for (const [k, v] of value) parts.push(`${pyRepr(k)}: ${pyRepr(v)}`);
    return `{${parts.join(', ')}}`;
  }
  throw new TypeError(`pyRepr: unsupported value ${String(value)}`);
}

/** Python truthiness (`bool(value)`). */
export function pyTruthy(value: PyValue): boolean {
  if (value === null || value === false || value === '' || value === 0 || value === 0n) return false;
  if (typeof value === 'number') return true; // 0 handled above; nan is truthy in Python
  if (value instanceof PyFloat) return value.value !== 0;
  if (value instanceof PyTuple) return value.items.length > 0;
  if (Array.isArray(value)) return value.length > 0;
  if (value instanceof Map) return value.size > 0;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Conversions for consumers

/** A number from an int or float value (bigint converted), else null. */
export function pyToNumber(value: PyValue | undefined): number | null {
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint') return Number(value);
  if (value instanceof PyFloat) return value.value;
  return null;
}

/** A string value, else null. */
export function pyToString(value: PyValue | undefined): string | null {
  return typeof value === 'string' ? value : null;
}

/**
 * Plain JS data (as `json.dumps` would see it): dict → object (keys stringified like json does:
 * None → "null", True → "true", floats via repr), tuple → array, PyFloat/bigint → number.
 */
export function pyToJs(value: PyValue): unknown {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return value;
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint') return Number(value);
  if (value instanceof PyFloat) return value.value;
  if (value instanceof PyTuple) return value.items.map(pyToJs);
  if (Array.isArray(value)) return value.map(pyToJs);
  const out: Record<string, unknown> = {};
  for (const [k, v] of value) {
    let key: string;
    if (k === null) key = 'null';
    else if (typeof k === 'boolean') key = k ? 'true' : 'false';
    else if (typeof k === 'string') key = k;
    else if (typeof k === 'number' || typeof k === 'bigint' || k instanceof PyFloat) key = pyRepr(k);
    else throw new TypeError(`keys must be str, int, float, bool or None, not ${pyRepr(k)}`);
    out[key] = pyToJs(v);
  }
  return out;
}

/**
 * Python value from plain JS data: objects and Maps → dict, arrays → list, non-integral numbers →
 * float (integral numbers stay ints: wrap them with `pyFloat` when Python would have a float).
 */
export function pyFromJs(value: unknown): PyValue {
  if (value === null || value === undefined) return null;
  if (typeof value === 'boolean' || typeof value === 'string' || typeof value === 'bigint') return value;
  if (typeof value === 'number') return Number.isInteger(value) ? value : new PyFloat(value);
  if (value instanceof PyFloat || value instanceof PyTuple) return value;
  if (Array.isArray(value)) return value.map(pyFromJs);
  if (value instanceof Map) {
    const out: PyDict = new Map();
    for (const [k, v] of value) out.set(pyFromJs(k), pyFromJs(v));
    return out;
  }
  if (typeof value === 'object') {
    const out: PyDict = new Map();
    for (const [k, v] of Object.entries(value)) out.set(k, pyFromJs(v));
    return out;
  }
  throw new TypeError(`pyFromJs: unsupported value of type ${typeof value}`);
}

// ---------------------------------------------------------------------------------------------
// Reader

const SIMPLE_ESCAPES: Record<string, string> = {
  '\\': '\\',
  "'": "'",
  '"': '"',
  a: '\x07',
  b: '\b',
  f: '\f',
  n: '\n',
  r: '\r',
  t: '\t',
  v: '\v',
};

const INT_RE = /(?:0[xX](?:_?[0-9a-fA-F])+|0[oO](?:_?[0-7])+|0[bB](?:_?[01])+|[1-9](?:_?\d)*|0(?:_?0)*)/y;
const DIGITS = String.raw`\d(?:_?\d)*`;
const FLOAT_RE = new RegExp(
  String.raw`(?:(?:${DIGITS})?\.${DIGITS}|${DIGITS}\.)(?:[eE][+-]?${DIGITS})?|${DIGITS}[eE][+-]?${DIGITS}`,
  'y',
);
const NAME_RE = /[A-Za-z_][A-Za-z0-9_]*/y;

class LiteralParser {
  private pos = 0;

  constructor(private readonly text: string) {}

  fail(reason: string, at = this.pos): never {
    const snippet = this.text.slice(at, at + 30);
    throw new BarmanError(`Malformed Python literal at offset ${at}: ${reason}${snippet ? ` near ${JSON.stringify(snippet)}` : ''}`);
  }

  private skipWs(): void {
    while (this.pos < this.text.length) {
      const c = this.text[this.pos];
      if (c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\f' || c === '\v') this.pos++;
      else if (c === '\\' && this.text[this.pos + 1] === '\n') this.pos += 2; // explicit line join
      else if (c === '#') {
        while (this.pos < this.text.length && this.text[this.pos] !== '\n') this.pos++;
      } else break;
    }
  }

  private peek(): string {
    this.skipWs();
    return this.text[this.pos] ?? '';
  }

  parseTop(): PyValue {
    const first = this.parseValue();
    let result = first;
    // literal_eval accepts a bare top-level tuple: `1, 2`
    if (this.peek() === ',') {
      const items = [first];
      while (this.peek() === ',') {
        this.pos++;
        const c = this.peek();
        if (c === '') break;
        items.push(this.parseValue());
      }
      result = new PyTuple(items);
    }
    if (this.peek() !== '') this.fail('unexpected trailing text');
    return result;
  }

  parseValue(): PyValue {
    const c = this.peek();
    if (c === '') this.fail('unexpected end of input');
    if (c === '(') return this.parseParen();
    if (c === '[') return this.parseList();
    if (c === '{') return this.parseDict();
    if (c === "'" || c === '"') return this.parseStrings();
    if (c === '-' || c === '+') {
      const start = this.pos;
      this.pos++;
      this.skipWs();
      const d = this.text[this.pos] ?? '';
      if (!/[0-9.]/.test(d)) this.fail(`operand of unary ${c} must be a number`, start);
      const n = this.parseNumber();
      if (c === '+') return n;
      if (n instanceof PyFloat) return new PyFloat(-n.value);
      if (typeof n === 'bigint') {
        const neg = -n;
        return neg >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(neg) : neg;
      }
      return n === 0 ? 0 : -n; // ints have no negative zero
    }
    if (/[0-9.]/.test(c)) return this.parseNumber();
    NAME_RE.lastIndex = this.pos;
    const m = NAME_RE.exec(this.text);
    if (m) {
      const name = m[0];
      const after = this.text[this.pos + name.length] ?? '';
      if ((after === "'" || after === '"') && /^[rRuUbBfF]{1,2}$/.test(name)) return this.parseStrings();
      if (name === 'None') return this.consume(name, null);
      if (name === 'True') return this.consume(name, true);
      if (name === 'False') return this.consume(name, false);
      this.fail(`unsupported name '${name}' (only None, True, False are literals)`);
    }
    this.fail(`unexpected character ${JSON.stringify(c)}`);
  }

  private consume<T extends PyValue>(token: string, value: T): T {
    this.pos += token.length;
    return value;
  }

  private parseNumber(): number | bigint | PyFloat {
    const start = this.pos;
    FLOAT_RE.lastIndex = start;
    const f = FLOAT_RE.exec(this.text);
    INT_RE.lastIndex = start;
    const i = INT_RE.exec(this.text);
    let value: number | bigint | PyFloat;
    let end: number;
    if (f && (!i || f[0].length >= i[0].length)) {
      end = start + f[0].length;
      value = new PyFloat(Number(f[0].replace(/_/g, '')));
    } else if (i) {
      end = start + i[0].length;
      const big = BigInt(i[0].replace(/_/g, ''));
      value = big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
    } else {
      this.fail('invalid number');
    }
    const next = this.text[end] ?? '';
    if (next === 'j' || next === 'J') this.fail('complex numbers are not supported', start);
    if (/[A-Za-z0-9_.]/.test(next)) this.fail('invalid number literal', start);
    this.pos = end;
    return value;
  }

  /** One or more adjacent string literals (implicitly concatenated, as Python does). */
  private parseStrings(): string {
    let out = this.parseString();
    for (;;) {
      const c = this.peek();
      if (c === "'" || c === '"') {
        out += this.parseString();
        continue;
      }
      NAME_RE.lastIndex = this.pos;
      const m = NAME_RE.exec(this.text);
      const after = m ? (this.text[this.pos + m[0].length] ?? '') : '';
      if (m && /^[rRuUbBfF]{1,2}$/.test(m[0]) && (after === "'" || after === '"')) {
        out += this.parseString();
        continue;
      }
      return out;
    }
  }

  private parseString(): string {
    const start = this.pos;
    let raw = false;
    while (/[rRuUbBfF]/.test(this.text[this.pos] ?? '')) {
      const p = (this.text[this.pos] ?? '').toLowerCase();
      if (p === 'b') this.fail('bytes literals are not supported', start);
      if (p === 'f') this.fail('f-strings are not literals', start);
      if (p === 'r') raw = true;
      this.pos++;
    }
    const prefix = this.text.slice(start, this.pos).toLowerCase();
    if (prefix !== '' && prefix !== 'r' && prefix !== 'u') this.fail('invalid string prefix', start);
    const q = this.text[this.pos] ?? '';
    const triple = this.text.startsWith(q.repeat(3), this.pos);
    this.pos += triple ? 3 : 1;
    let out = '';
    for (;;) {
      if (this.pos >= this.text.length) this.fail('unterminated string', start);
      const c = this.text[this.pos] ?? '';
      if (triple ? this.text.startsWith(q.repeat(3), this.pos) : c === q) {
        this.pos += triple ? 3 : 1;
        return out;
      }
      if (!triple && c === '\n') this.fail('unterminated string (newline inside a single-quoted string)', start);
      if (c !== '\\') {
        out += c;
        this.pos++;
        continue;
      }
      const e = this.text[this.pos + 1] ?? '';
      if (e === '') this.fail('unterminated string', start);
      if (raw) {
        // raw strings keep the backslash; it only stops the next char from ending the string
        out += c + e;
        this.pos += 2;
        continue;
      }
      this.pos += 2;
      out += this.escape(e);
    }
  }

  /** Decode the escape whose letter `e` was just consumed. */
  private escape(e: string): string {
    const simple = SIMPLE_ESCAPES[e];
    if (simple !== undefined) return simple;
    if (e === '\n') return ''; // backslash-newline: line continuation
    if (e >= '0' && e <= '7') {
      let digits = e;
      while (digits.length < 3 && /[0-7]/.test(this.text[this.pos] ?? '')) digits += this.text[this.pos++];
      return String.fromCodePoint(parseInt(digits, 8));
    }
    const width = e === 'x' ? 2 : e === 'u' ? 4 : e === 'U' ? 8 : 0;
    if (width) {
      const h = this.text.slice(this.pos, this.pos + width);
      if (!new RegExp(`^[0-9a-fA-F]{${width}}$`).test(h)) {
        this.fail(`truncated \\${e}${'X'.repeat(width)} escape`, this.pos - 2);
      }
      const cp = parseInt(h, 16);
      if (cp > 0x10ffff) this.fail(`illegal Unicode character in \\${e} escape`, this.pos - 2);
      this.pos += width;
      return String.fromCodePoint(cp);
    }
    if (e === 'N') this.fail('\\N{...} escapes are not supported', this.pos - 2);
    return `\\${e}`; // unknown escapes are kept verbatim, as Python does
  }

  private parseParen(): PyValue {
    const start = this.pos;
    this.pos++; // (
    if (this.peek() === ')') {
      this.pos++;
      return new PyTuple([]);
    }
    const first = this.parseValue();
    if (this.peek() === ')') {
      this.pos++;
      return first; // parenthesised expression, not a tuple
    }
    const items = [first];
    while (this.peek() === ',') {
      this.pos++;
      if (this.peek() === ')') break;
      items.push(this.parseValue());
    }
    if (this.peek() !== ')') this.fail("expected ',' or ')' in tuple", start);
    this.pos++;
    return new PyTuple(items);
  }

  private parseList(): PyValue[] {
    const start = this.pos;
    this.pos++; // [
    const items: PyValue[] = [];
    while (this.peek() !== ']') {
      items.push(this.parseValue());
      const c = this.peek();
      if (c === ',') this.pos++;
      else if (c !== ']') this.fail("expected ',' or ']' in list", start);
    }
    this.pos++;
    return items;
  }

  private parseDict(): PyDict {
    const start = this.pos;
    this.pos++; // {
    const out: PyDict = new Map();
    while (this.peek() !== '}') {
      const keyAt = this.pos;
      const key = this.parseValue();
      const sep = this.peek();
      if (sep !== ':') {
        if (out.size === 0 && (sep === ',' || sep === '}')) this.fail('sets are not supported (expected a dict)', start);
        this.fail("expected ':' in dict", start);
      }
      this.pos++;
      const value = this.parseValue();
      out.set(hashableKey(out, key, () => this.fail('unhashable dict key', keyAt)), value);
      const c = this.peek();
      if (c === ',') this.pos++;
      else if (c !== '}') this.fail("expected ',' or '}' in dict", start);
    }
    this.pos++;
    return out;
  }
}

/**
 * Python dict key semantics for the key types a literal can hold: a repeated key keeps its first
 * position and takes the last value, and `1`, `1.0` and `True` are the same key.
 */
function hashableKey(dict: PyDict, key: PyValue, unhashable: () => never): PyValue {
  if (Array.isArray(key) || key instanceof Map) unhashable();
  if (key instanceof PyTuple && key.items.some((k) => Array.isArray(k) || k instanceof Map)) unhashable();
  if (key === null || typeof key === 'string') return key;
  const probe = keyIdentity(key);
  for (const existing of dict.keys()) {
    if (existing !== null && typeof existing !== 'string' && keyIdentity(existing) === probe) return existing;
  }
  return key;
}

function keyIdentity(key: PyValue): string {
  if (typeof key === 'bigint') return `n:${key}`;
  const num = typeof key === 'boolean' ? Number(key) : pyToNumber(key);
  if (num !== null) {
    // 1 == 1.0 == True in Python; compare integral values exactly through BigInt
    return `n:${Number.isInteger(num) ? BigInt(num).toString() : String(num)}`;
  }
  if (key instanceof PyTuple) return `t:(${key.items.map(keyIdentity).join(',')})`;
  return `r:${pyRepr(key)}`;
}

/**
 * Parse the text of a Python literal (the `ast.literal_eval` subset Barman's values use): str
 * (both quote styles, r/u prefixes, all escapes but `\N{}`), int (incl. hex/octal/binary and
 * underscores), float, unary minus/plus on numbers, None/True/False, tuples, lists and dicts.
 * Throws an Error naming the offset on anything else (names, calls, sets, bytes, complex...).
 */
export function parsePyLiteral(text: string): PyValue {
  return new LiteralParser(text).parseTop();
}
