import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  PyFloat,
  PyTuple,
  type PyValue,
  parsePyLiteral,
  pyDict,
  pyFloat,
  pyFromJs,
  pyRepr,
  pyStrRepr,
  pyToJs,
  pyToNumber,
  pyToString,
  pyTruthy,
  pyTuple,
} from '../../src/catalog/pyliteral.js';

/** parse → repr must give back the exact text (for text in Python repr form). */
function roundTrip(text: string): void {
  assert.equal(pyRepr(parsePyLiteral(text)), text, `round trip of ${text}`);
}

describe('pyStrRepr / pyRepr(str)', () => {
  // expected values produced by CPython 3.11 repr()
  const cases: Array<[string, string]> = [
    ['', "''"],
    ['abc', "'abc'"],
    ["it's", `"it's"`],
    ['say "hi"', `'say "hi"'`],
    [`both ' and "`, `'both \\' and "'`],
    [`'`, `"'"`],
    [`"`, `'"'`],
    ['a\\b', "'a\\\\b'"],
    ['tab\there', "'tab\\there'"],
    ['l1\nl2\r\n', "'l1\\nl2\\r\\n'"],
    ['\x00\x1b\x7f', "'\\x00\\x1b\\x7f'"],
    ['\x01\x08\x0b\x0c\x1f', "'\\x01\\x08\\x0b\\x0c\\x1f'"],
    ['é日本😀', "'é日本😀'"],
    ['\xa0\xad\u2028\u{e0001}', "'\\xa0\\xad\\u2028\\U000e0001'"],
    ['\x80\x9f\xff', "'\\x80\\x9fÿ'"],
    ['\ud800', "'\\ud800'"],
    ['\u200b\ufeff', "'\\u200b\\ufeff'"],
    ['a b', "'a b'"],
    ['a\u3000b', "'a\\u3000b'"],
    ["it's \\n", `"it's \\\\n"`],
  ];
  for (const [input, expected] of cases) {
    it(`repr(${JSON.stringify(input)}) = ${expected}`, () => {
      assert.equal(pyStrRepr(input), expected);
      assert.equal(pyRepr(input), expected);
      assert.equal(parsePyLiteral(expected), input);
    });
  }
});

describe('pyRepr numbers', () => {
  // expected values produced by CPython 3.11 repr()
  const floats: Array<[number, string]> = [
    [0.1, '0.1'],
    [1e-5, '1e-05'],
    [1e16, '1e+16'],
    [1e15, '1000000000000000.0'],
    [123456789.123, '123456789.123'],
    [-0, '-0.0'],
    [0, '0.0'],
    [12, '12.0'],
    [100, '100.0'],
    [1.5e-7, '1.5e-07'],
    [1e22, '1e+22'],
    [1e-4, '0.0001'],
    [0.00012, '0.00012'],
    [0.000123456, '0.000123456'],
    [1.7976931348623157e308, '1.7976931348623157e+308'],
    [5e-324, '5e-324'],
    [2 / 3, '0.6666666666666666'],
    [-1.25, '-1.25'],
    [1718291829, '1718291829.0'],
    [1718291829.7231345, '1718291829.7231345'],
    [9999999999999998, '9999999999999998.0'],
    [1.2345678901234568e16, '1.2345678901234568e+16'],
    [1e100, '1e+100'],
    [Infinity, 'inf'],
    [-Infinity, '-inf'],
    [NaN, 'nan'],
  ];
  for (const [x, expected] of floats) {
    it(`float ${expected}`, () => {
      assert.equal(pyRepr(pyFloat(x)), expected);
      assert.equal(String(new PyFloat(x)), expected);
    });
  }

  it('plain JS numbers: integral → int, otherwise float', () => {
    assert.equal(pyRepr(0), '0');
    assert.equal(pyRepr(-0), '0');
    assert.equal(pyRepr(42), '42');
    assert.equal(pyRepr(-7), '-7');
    assert.equal(pyRepr(1e21), '1000000000000000000000');
    assert.equal(pyRepr(0.5), '0.5');
    assert.equal(pyRepr(NaN), 'nan');
    assert.equal(pyRepr(Infinity), 'inf');
  });

  it('bigint ints', () => {
    assert.equal(pyRepr(123456789012345678901234567890n), '123456789012345678901234567890');
    assert.equal(pyRepr(-5n), '-5');
  });

  it('constants', () => {
    assert.equal(pyRepr(null), 'None');
    assert.equal(pyRepr(true), 'True');
    assert.equal(pyRepr(false), 'False');
  });
});

describe('pyRepr containers', () => {
  it('tuples', () => {
    assert.equal(pyRepr(pyTuple()), '()');
    assert.equal(pyRepr(pyTuple(1)), '(1,)');
    assert.equal(pyRepr(pyTuple(1, 'a', null)), "(1, 'a', None)");
    assert.equal(pyRepr(pyTuple(pyTuple(1))), '((1,),)');
  });

  it('lists', () => {
    assert.equal(pyRepr([]), '[]');
    assert.equal(pyRepr([1]), '[1]');
    assert.equal(pyRepr([pyTuple(1, 'a', [null, true, false])]), "[(1, 'a', [None, True, False])]");
  });

  it('dicts keep insertion order, including integer-like string keys', () => {
    assert.equal(pyRepr(new Map()), '{}');
    const d = new Map<PyValue, PyValue>([
      ['b', 1],
      ['10', 2],
      ['a', 3],
      [1, []],
    ]);
    assert.equal(pyRepr(d), "{'b': 1, '10': 2, 'a': 3, 1: []}");
    assert.equal(pyRepr(pyDict({ a: pyDict({ b: pyTuple(pyFloat(1), -2) }) })), "{'a': {'b': (1.0, -2)}}");
    assert.equal(pyRepr(pyDict([[pyTuple(1, 2), 'x']])), "{(1, 2): 'x'}");
  });

  it('tablespaces list as Barman writes it', () => {
    const v = [pyTuple('tbs1', 16385, '/srv/tbs1'), pyTuple("it's", 16386, '/srv/x y')];
    assert.equal(pyRepr(v), `[('tbs1', 16385, '/srv/tbs1'), ("it's", 16386, '/srv/x y')]`);
  });

  it('rejects values that are not Python values', () => {
    assert.throws(() => pyRepr({} as unknown as PyValue), TypeError);
    assert.throws(() => pyRepr(undefined as unknown as PyValue), TypeError);
  });
});

describe('parsePyLiteral', () => {
  it('constants and numbers', () => {
    assert.equal(parsePyLiteral('None'), null);
    assert.equal(parsePyLiteral('True'), true);
    assert.equal(parsePyLiteral('False'), false);
    assert.equal(parsePyLiteral('42'), 42);
    assert.equal(parsePyLiteral('0'), 0);
    assert.equal(parsePyLiteral('00'), 0);
    assert.equal(parsePyLiteral('-5'), -5);
    assert.equal(parsePyLiteral('- 5'), -5);
    assert.equal(parsePyLiteral('+5'), 5);
    assert.equal(Object.is(parsePyLiteral('-0'), 0), true);
    assert.equal(parsePyLiteral('0x1F'), 31);
    assert.equal(parsePyLiteral('0o17'), 15);
    assert.equal(parsePyLiteral('0b101'), 5);
    assert.equal(parsePyLiteral('1_000'), 1000);
    assert.equal(parsePyLiteral('123456789012345678901234567890'), 123456789012345678901234567890n);
    assert.equal(parsePyLiteral('-9007199254740992'), -9007199254740992n);
    assert.equal(parsePyLiteral('9007199254740991'), 9007199254740991);
  });

  it('floats are PyFloat, even when integral', () => {
    assert.deepEqual(parsePyLiteral('12.0'), pyFloat(12));
    assert.deepEqual(parsePyLiteral('0.123456'), pyFloat(0.123456));
    assert.deepEqual(parsePyLiteral('1.'), pyFloat(1));
    assert.deepEqual(parsePyLiteral('.5'), pyFloat(0.5));
    assert.deepEqual(parsePyLiteral('1e-05'), pyFloat(1e-5));
    assert.deepEqual(parsePyLiteral('1E5'), pyFloat(1e5));
    assert.deepEqual(parsePyLiteral('1_0.5e1_0'), pyFloat(105000000000));
    assert.deepEqual(parsePyLiteral('-0.0'), pyFloat(-0));
    assert.ok(Object.is((parsePyLiteral('-0.0') as PyFloat).value, -0));
    assert.deepEqual(parsePyLiteral('1e400'), pyFloat(Infinity));
  });

  it('strings: both quote styles, prefixes, concatenation', () => {
    assert.equal(parsePyLiteral(`'abc'`), 'abc');
    assert.equal(parsePyLiteral(`"abc"`), 'abc');
    assert.equal(parsePyLiteral(`"it's"`), "it's");
    assert.equal(parsePyLiteral(`'say "hi"'`), 'say "hi"');
    assert.equal(parsePyLiteral(`u'x'`), 'x');
    assert.equal(parsePyLiteral(`U"x"`), 'x');
    assert.equal(parsePyLiteral(`'a' "b" u'c'`), 'abc');
    assert.equal(parsePyLiteral(`'''tri'ple\nline'''`), "tri'ple\nline");
    assert.equal(parsePyLiteral(`"""x"y"""`), 'x"y');
    assert.equal(parsePyLiteral(`'é日本😀'`), 'é日本😀');
  });

  it('escapes', () => {
    assert.equal(parsePyLiteral(String.raw`'\101\x41\u0041\U00000041\q\a\b\f\v\0'`), 'AAAA\\q\x07\b\f\v\0');
    assert.equal(parsePyLiteral(String.raw`'\\ \' \" \n \t \r'`), `\\ ' " \n \t \r`);
    assert.equal(parsePyLiteral(String.raw`'\xe9\u65e5\U0001F600'`), 'é日😀');
    assert.equal(parsePyLiteral(String.raw`'\ud800'`), '\ud800');
    assert.equal(parsePyLiteral("'a\\\nb'"), 'ab'); // backslash-newline continuation
    assert.equal(parsePyLiteral(String.raw`'\777'`), '\u01ff');
  });

  it('raw strings keep backslashes', () => {
    assert.equal(parsePyLiteral(String.raw`r'a\nb\''`), String.raw`a\nb\'`);
    assert.equal(parsePyLiteral(String.raw`R"\x"`), String.raw`\x`);
  });

  it('tuples, lists, dicts', () => {
    assert.deepEqual(parsePyLiteral('()'), pyTuple());
    assert.deepEqual(parsePyLiteral('(1,)'), pyTuple(1));
    assert.deepEqual(parsePyLiteral('( 1 , )'), pyTuple(1));
    assert.equal(parsePyLiteral('(1)'), 1);
    assert.equal(parsePyLiteral("('a')"), 'a');
    assert.deepEqual(parsePyLiteral('((1,))'), pyTuple(1));
    assert.deepEqual(parsePyLiteral('(1, 2, 3,)'), pyTuple(1, 2, 3));
    assert.deepEqual(parsePyLiteral('1, 2'), pyTuple(1, 2));
    assert.deepEqual(parsePyLiteral('1,'), pyTuple(1));
    assert.deepEqual(parsePyLiteral('[]'), []);
    assert.deepEqual(parsePyLiteral('[1, [2, (3, None)],]'), [1, [2, pyTuple(3, null)]]);
    assert.deepEqual(parsePyLiteral('{}'), new Map());
    assert.deepEqual(
      parsePyLiteral("{'a': {'b': (1.0, -2)}, 1: [],}"),
      new Map<PyValue, PyValue>([
        ['a', new Map<PyValue, PyValue>([['b', pyTuple(pyFloat(1), -2)]])],
        [1, []],
      ]),
    );
    assert.deepEqual(parsePyLiteral("{(1, 'x'): True}"), new Map<PyValue, PyValue>([[pyTuple(1, 'x'), true]]));
  });

  it('whitespace and newlines between tokens', () => {
    assert.deepEqual(parsePyLiteral("  [\n  ('a', 1),\n\t('b', 2)\n]  \n"), [pyTuple('a', 1), pyTuple('b', 2)]);
    assert.deepEqual(parsePyLiteral('[1, # comment\n 2]'), [1, 2]);
  });

  it('dict keys follow Python equality: first key kept, last value wins', () => {
    const d = parsePyLiteral("{1: 'a', 1.0: 'b', True: 'c', 'k': 1, 'k': 2}") as Map<PyValue, PyValue>;
    assert.equal(pyRepr(d), "{1: 'c', 'k': 2}");
    const t = parsePyLiteral("{(1, 2): 'a', (1, 2): 'b'}") as Map<PyValue, PyValue>;
    assert.equal(pyRepr(t), "{(1, 2): 'b'}");
  });

  const bad: Array<[string, RegExp]> = [
    ['', /end of input/],
    ['   ', /end of input/],
    ['inf', /unsupported name 'inf'/],
    ['nan', /unsupported name/],
    ['none', /unsupported name 'none'/],
    ['foo(1)', /unsupported name 'foo'/],
    ['set()', /unsupported name 'set'/],
    ['{1, 2}', /sets are not supported/],
    ["b'x'", /bytes/],
    ["f'x'", /f-strings/],
    ["ur'x'", /invalid string prefix/],
    ['1j', /complex/],
    ['1+2j', /trailing/],
    ['1 + 2', /trailing/],
    ['--1', /operand of unary/],
    ["-'a'", /operand of unary/],
    ['01', /invalid number/],
    ['1abc', /invalid number/],
    ['1.2.3', /invalid number/],
    ["'abc", /unterminated string/],
    ["'a\nb'", /newline inside/],
    [String.raw`'\x4'`, /truncated \\xXX escape/],
    [String.raw`'\u12'`, /truncated/],
    [String.raw`'\U00110000'`, /illegal Unicode/],
    [String.raw`'\N{DASH}'`, /\\N\{\.\.\.\} escapes are not supported/],
    ['[1, 2', /expected ',' or '\]'/],
    ['[1 2]', /expected ',' or '\]'/],
    ['(1 2)', /expected ',' or '\)'/],
    ["{'a' 1}", /expected ':'/],
    ["{'a': 1 'b': 2}", /expected ',' or '\}'/],
    ['{[1]: 2}', /unhashable/],
    ['{([1],): 2}', /unhashable/],
    ['[1] [2]', /trailing/],
    ['$', /unexpected character/],
    ['x = 1', /unsupported name 'x'/],
  ];
  for (const [text, re] of bad) {
    it(`rejects ${JSON.stringify(text)}`, () => {
      assert.throws(
        () => parsePyLiteral(text),
        (err: unknown) => err instanceof Error && /Malformed Python literal at offset \d+/.test(err.message) && re.test(err.message),
      );
    });
  }
});

describe('byte-for-byte round trip of repr text', () => {
  const texts = [
    'None',
    'True',
    "''",
    "'plain'",
    `"it's"`,
    `'both \\' and "'`,
    "'\\x00\\x1b\\x7f\\n\\t\\r\\\\'",
    "'é日本😀\\xa0\\u2028'",
    '12.0',
    '0.123456',
    '1e-05',
    '1e+16',
    '-0.0',
    '-3',
    '123456789012345678901234567890',
    '()',
    '(1,)',
    "((1, 2), [3, (4,)], {'a': ()})",
    "[('tbs1', 16385, '/srv/tbs1'), ('tbs2', 16386, '/srv/tbs2')]",
    "['/etc/postgresql/16/main/conf.d/a.conf', '/etc/postgresql/16/main/conf.d/b.conf']",
    "{'total_time': 12.0, 'number_of_workers': 2, 'analysis_time': 0.123456, 'analysis_time_per_item': {'pgdata': 0.100001, 'tbs1': 0.023455}, 'copy_time': 11.5, 'copy_time_per_item': {'pgdata': 10.25, 'tbs1': 1.25}, 'serialized_copy_time': 11.5, 'serialized_copy_time_per_item': {'pgdata': 10.25, 'tbs1': 1.25}}",
    "{'provider': 'gcp', 'provider_info': {'project': 'p', 'device_name': 'd'}, 'snapshots': [{'mount': {'mount_options': 'rw,noatime', 'mount_point': '/opt/disk0'}, 'provider': {'snapshot_name': 'snap0', 'snapshot_project': 'p'}}]}",
    "{'16385': 1, '2': 2, 1: 3, None: 4, False: 5, 1.5: 6, (1,): 7}",
    "[None, True, False, -1, 1.5, 'x', [], {}, ()]",
  ];
  for (const t of texts) it(t.slice(0, 60), () => roundTrip(t));
});

describe('helpers', () => {
  it('pyTruthy mirrors bool()', () => {
    for (const v of [null, false, 0, 0n, '', pyFloat(0), pyFloat(-0), pyTuple(), [], new Map()] as PyValue[]) {
      assert.equal(pyTruthy(v), false, pyRepr(v));
    }
    for (const v of [true, 1, -1, 2n, 'x', pyFloat(0.1), pyFloat(NaN), pyTuple(null), [null], pyDict({ a: null })] as PyValue[]) {
      assert.equal(pyTruthy(v), true, pyRepr(v));
    }
  });

  it('pyToNumber / pyToString', () => {
    assert.equal(pyToNumber(3), 3);
    assert.equal(pyToNumber(pyFloat(1.5)), 1.5);
    assert.equal(pyToNumber(7n), 7);
    assert.equal(pyToNumber('3'), null);
    assert.equal(pyToNumber(undefined), null);
    assert.equal(pyToString('x'), 'x');
    assert.equal(pyToString(1), null);
  });

  it('pyToJs converts to JSON-able data', () => {
    const v = parsePyLiteral("{'a': (1, 2.5), 'b': [None, True], 1: 'int key', 2.0: 'f', None: 0, False: 1}");
    assert.deepEqual(pyToJs(v), {
      a: [1, 2.5],
      b: [null, true],
      '1': 'int key',
      '2.0': 'f',
      null: 0,
      false: 1,
    });
    assert.throws(() => pyToJs(parsePyLiteral('{(1,): 2}')), TypeError);
    assert.equal(pyToJs(5n), 5);
  });

  it('pyFromJs builds values from plain data', () => {
    const v = pyFromJs({ total_time: 1.5, workers: 2, items: ['a', null], m: new Map([['k', 0.25]]) });
    assert.equal(pyRepr(v), "{'total_time': 1.5, 'workers': 2, 'items': ['a', None], 'm': {'k': 0.25}}");
    assert.equal(pyRepr(pyFromJs({ t: pyFloat(12) })), "{'t': 12.0}");
    assert.equal(pyFromJs(undefined), null);
    assert.throws(() => pyFromJs(() => 1), TypeError);
  });
});
