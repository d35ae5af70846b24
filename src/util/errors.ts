/**
 * An expected failure with a one-line message for the user. The CLI prints it as
 * `ERROR: <message>` and exits with `exitCode`; no stack trace is shown.
 */
export class BarmanError extends Error {
  constructor(message: string, readonly exitCode = 1) {
    super(message);
    this.name = 'BarmanError';
  }
}

/** Message of any thrown value, first line only (for backup.info `error` and logs). */
export function errorMessage(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.split('\n')[0] ?? text;
}

/** The last non-blank line of a program's output (trimmed), or '': what a one-line error shows. */
export function lastLine(text: string): string {
  return (
    text
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '')
      .at(-1) ?? ''
  );
}
