import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { humanDuration, percent, prettySize, pyFixed } from '../../src/util/format.js';

describe('pyFixed (Python %.Nf)', () => {
  it('rounds like toFixed away from exact ties', () => {
    assert.equal(pyFixed(1.26, 1), '1.3');
    assert.equal(pyFixed(0.05, 1), '0.1'); // 0.05 is slightly above 0.05 in binary
    assert.equal(pyFixed(2.675, 2), '2.67'); // slightly below in binary
    assert.equal(pyFixed(820, 1), '820.0');
  });
  it('rounds exact ties to even', () => {
    assert.equal(pyFixed(1.25, 1), '1.2');
    assert.equal(pyFixed(1.75, 1), '1.8');
    assert.equal(pyFixed(-1.25, 1), '-1.2');
    assert.equal(pyFixed(0.5, 0), '0');
    assert.equal(pyFixed(1.5, 0), '2');
    assert.equal(pyFixed(2.5, 0), '2');
    assert.equal(pyFixed(0.125, 2), '0.12');
    assert.equal(pyFixed(0.375, 2), '0.38');
  });
  it('handles non-finite values', () => {
    assert.equal(pyFixed(Number.NaN, 1), 'nan');
    assert.equal(pyFixed(Infinity, 1), 'inf');
    assert.equal(pyFixed(-Infinity, 1), '-inf');
  });
});

describe('prettySize', () => {
  it('prints bytes below 1 KiB as integers', () => {
    assert.equal(prettySize(0), '0 B');
    assert.equal(prettySize(1), '1 B');
    assert.equal(prettySize(1023), '1023 B');
    assert.equal(prettySize(512.9), '512 B');
  });
  it('uses base 1024 with one decimal', () => {
    assert.equal(prettySize(1024), '1.0 KiB');
    assert.equal(prettySize(1536), '1.5 KiB');
    assert.equal(prettySize(1024 * 1024 - 1), '1024.0 KiB');
    assert.equal(prettySize(1024 * 1024), '1.0 MiB');
    assert.equal(prettySize(820 * 1024 * 1024), '820.0 MiB');
    assert.equal(prettySize(16 * 1024 ** 3), '16.0 GiB');
    assert.equal(prettySize(3 * 1024 ** 4), '3.0 TiB');
    assert.equal(prettySize(2 * 1024 ** 5), '2.0 PiB');
  });
  it('rounds exact ties to even like Python', () => {
    assert.equal(prettySize(1280), '1.2 KiB'); // 1.25 KiB
    assert.equal(prettySize(1792), '1.8 KiB'); // 1.75 KiB
    assert.equal(prettySize(1331), '1.3 KiB');
  });
  it('keeps the sign of negative sizes', () => {
    assert.equal(prettySize(-10), '-10 B');
    assert.equal(prettySize(-2048), '-2.0 KiB');
  });
  it('accepts fractional rates', () => {
    assert.equal(prettySize(2 * 1024 * 1024 + 0.5), '2.0 MiB');
  });
});

describe('humanDuration', () => {
  it('says less than one second under a second', () => {
    assert.equal(humanDuration(0), 'less than one second');
    assert.equal(humanDuration(0.999), 'less than one second');
  });
  it('uses singular and plural forms', () => {
    assert.equal(humanDuration(1), '1 second');
    assert.equal(humanDuration(2), '2 seconds');
    assert.equal(humanDuration(60), '1 minute');
    assert.equal(humanDuration(120), '2 minutes');
    assert.equal(humanDuration(3600), '1 hour');
    assert.equal(humanDuration(86400), '1 day');
    assert.equal(humanDuration(2 * 86400), '2 days');
  });
  it('joins the non-zero parts', () => {
    assert.equal(humanDuration(86400 + 2 * 3600 + 3 * 60 + 4), '1 day, 2 hours, 3 minutes, 4 seconds');
    assert.equal(humanDuration(3 * 86400 + 5), '3 days, 5 seconds');
    assert.equal(humanDuration(3661), '1 hour, 1 minute, 1 second');
  });
  it('drops fractions of a second', () => {
    assert.equal(humanDuration(61.9), '1 minute, 1 second');
  });
  it('appends " ago" to negative durations', () => {
    assert.equal(humanDuration(-90), '1 minute, 30 seconds ago');
    assert.equal(humanDuration(-0.5), 'less than one second ago');
  });
});

describe('percent', () => {
  it('prints a ratio as a percentage with two decimals', () => {
    assert.equal(percent(0.9861), '98.61%');
    assert.equal(percent(0), '0.00%');
    assert.equal(percent(1), '100.00%');
  });
});
