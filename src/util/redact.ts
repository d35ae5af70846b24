/** Hide passwords from conninfo strings and URIs before anything is printed or logged. */
export function redact(text: string): string {
  return text
    // An unquoted value runs to the next blank; closing quotes and punctuation of the text
    // around it (a quoted config value, a JSON string) stay, so the rest remains readable.
    .replace(/(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+?(?=['",;)}\]]*(?:\s|$)))/gi, '$1*REDACTED*')
    .replace(/(postgres(?:ql)?:\/\/[^:/@\s]*:)([^@\s]*)@/gi, '$1*REDACTED*@');
}
