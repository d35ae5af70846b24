/**
 * What every command receives: the parsed global options, the output, and the configuration
 * (loaded on first use so that `--help` and `--version` never read it).
 */
import { loadConfig, type Config, type ServerConfig } from '../config/config.js';
import { BarmanError } from '../util/errors.js';
import { configureLog, setLogServer } from '../util/log.js';
import { becomeBarmanUser } from '../util/run-as.js';
import type { Output } from './output.js';

export interface GlobalOptions {
  config?: string;
  quiet?: boolean;
  debug?: boolean;
  format?: 'console' | 'json';
  color?: 'never' | 'always' | 'auto';
  logLevel?: string;
}

export class CliContext {
  private loaded: Config | null = null;

  constructor(
    readonly opts: GlobalOptions,
    readonly out: Output,
    /** Read-only commands that another user (PostgreSQL's restore_command) may run. */
    private readonly anyUser = false,
    /** The command name as typed (an alias such as `recover` may print as Barman's old name did). */
    readonly invokedAs: string = '',
  ) {}

  get config(): Config {
    if (!this.loaded) {
      const cfg = loadConfig(this.opts.config);
      // Before anything is created on disk (log file, locks, directories).
      becomeBarmanUser(cfg.global.barman_user ?? 'barman', this.anyUser);
      configureLog({
        file: cfg.global.log_file,
        level: this.opts.logLevel ?? cfg.global.log_level,
        format: cfg.global.log_format,
        stderr: this.opts.debug === true && !cfg.global.log_file,
        // An unwritable log file is worth one warning, not the operation.
        onProblem: (m) => this.out.warning(m),
      });
      for (const w of cfg.warnings) this.out.warning(w);
      this.loaded = cfg;
    }
    return this.loaded;
  }

  /** Global errors (e.g. conflicting paths across servers) stop every command. */
  private checkGlobalErrors(): void {
    if (this.config.errors.length > 0) {
      for (const e of this.config.errors) this.out.error(e);
      throw new BarmanError('Please fix the configuration errors above', 1);
    }
  }

  /** One server, for single-server commands; `all` is refused. */
  server(name: string, opts: { allowInactive?: boolean; allowDisabled?: boolean } = {}): ServerConfig {
    this.checkGlobalErrors();
    if (name === 'all') throw new BarmanError("You cannot use 'all' in a single server context");
    const srv = this.config.servers.get(name);
    if (!srv) throw new BarmanError(`Unknown server '${name}'`);
    if (srv.disabled) {
      if (!opts.allowDisabled) throw new BarmanError(`Server '${name}' is disabled by configuration errors: ${srv.errors.join('; ')}`);
      // Still serve (get-wal during a recovery must not fail over a typo elsewhere), but say so.
      for (const e of srv.errors) this.out.warning(`${name}: ${e}`);
    }
    if (!srv.active && !opts.allowInactive) {
      throw new BarmanError(`Inactive server: ${name}`);
    }
    setLogServer(srv.name);
    return srv;
  }

  /**
   * Several servers (or `all`). Unknown names are errors; inactive or disabled servers are
   * reported and skipped unless the command allows them.
   */
  servers(names: readonly string[], opts: { allowInactive?: boolean; allowDisabled?: boolean; skipPassive?: boolean } = {}): ServerConfig[] {
    this.checkGlobalErrors();
    const all = names.length === 0 || names.includes('all');
    const picked: ServerConfig[] = [];
    for (const n of names) {
      if (n !== 'all' && !this.config.servers.has(n) && all) this.out.error(`Unknown server '${n}'`);
    }
    if (all) {
      picked.push(...this.config.servers.values());
    } else {
      for (const n of names) {
        const srv = this.config.servers.get(n);
        if (!srv) this.out.error(`Unknown server '${n}'`);
        else picked.push(srv);
      }
    }
    const result: ServerConfig[] = [];
    for (const srv of picked) {
      if (srv.disabled && !opts.allowDisabled) {
        for (const e of srv.errors) this.out.error(`${srv.name}: ${e}`);
        continue;
      }
      if (!srv.active && !opts.allowInactive) {
        if (!all) this.out.warning(`Skipping inactive server '${srv.name}'`);
        continue;
      }
      if (opts.skipPassive && srv.passive) {
        // Information, as in Barman: `backup all` on a mixed installation is a success.
        this.out.info(`Skipping passive server '${srv.name}'`);
        continue;
      }
      result.push(srv);
    }
    // With several servers each line's server is only known where the domain names it.
    setLogServer(result.length === 1 ? (result[0]?.name ?? null) : null);
    return result;
  }
}
