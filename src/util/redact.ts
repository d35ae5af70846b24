/** Hide passwords from conninfo strings and URIs before anything is printed or logged. */
export function redact(text: string): string {
  return text
    .replace(/(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)/gi, '$1*REDACTED*')
    .replace(/(postgres(?:ql)?:\/\/[^:/@\s]*:)([^@\s]*)@/gi, '$1*REDACTED*@');
}
