import type { Command } from 'commander';
import { BarmanError } from '../../util/errors.js';
import type { CliContext } from '../context.js';

// Placeholder until the command is implemented.
export function define(cmd: Command): void {
  cmd.argument('[args...]');
}

export async function run(_ctx: CliContext): Promise<void> {
  throw new BarmanError('not implemented yet');
}
