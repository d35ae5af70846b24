/**
 * The part of pg-native (node-postgres' libpq binding) that we use; the package ships no types.
 * Values are parsed by pg-types, as node-postgres does.
 */
declare module 'pg-native' {
  import { EventEmitter } from 'node:events';

  type Callback<T> = (err: Error | string | null | undefined, result: T) => void;

  class Client extends EventEmitter {
    constructor(config?: { arrayMode?: boolean });
    /** PQconnectdb(conninfo) in the libuv thread pool. */
    connect(conninfo: string, cb: (err?: Error) => void): void;
    /** PQsendQueryParams with `values`, PQsendQuery (simple protocol) without. */
    query(text: string, cb: Callback<Record<string, unknown>[]>): void;
    query(text: string, values: unknown[], cb: Callback<Record<string, unknown>[]>): void;
    end(cb?: () => void): void;
    /** The libpq connection (the `libpq` package, an EventEmitter): PQsocket is -1 once libpq dropped the socket. */
    pq: EventEmitter & { socket(): number; errorMessage(): string };
    /** pg-native's own state: true while it waits for the answer to a query. */
    _reading?: boolean;
  }
  export = Client;
}
