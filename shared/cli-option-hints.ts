import type { Command } from 'commander';

/**
 * Commander's "unknown option" error with a suggestion it does not make: an option the typed one
 * begins (`--admin-key` for `--admin-key-file`, `--state` for `--state-dir`), which its own
 * "did you mean" misses once the rest is more than 3 characters long. `text` unchanged otherwise.
 */
export function withOptionHint(text: string, program: Command): string {
  const typed = /unknown option '(--[\w-]+)'/.exec(text)?.[1];
  if (!typed || /Did you mean/i.test(text)) return text;
  const matches = [...longOptions(program)].filter((long) => long.startsWith(`${typed}-`));
  if (matches.length === 0) return text;
  const hint = `(Did you mean ${matches.slice(0, 3).join(' or ')}?)`;
  return text.replace(/\n?$/, `\n${hint}\n`);
}

/** Every long option of `command` and its subcommands. */
function longOptions(command: Command, into = new Set<string>()): Set<string> {
  for (const option of command.options) if (option.long) into.add(option.long);
  for (const sub of command.commands) longOptions(sub, into);
  return into;
}
