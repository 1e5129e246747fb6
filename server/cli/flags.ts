/**
 * A command's own flags, declared once: the commander option (its text, help, default and choices)
 * and the zod type its value is parsed with. `addFlags` puts them on the command and `flagsSchema`
 * gives the options schema, so the two can never disagree.
 */
import { type Command, Option } from 'commander';
import { z } from 'zod';
import { parseDuration } from '../../shared/durations.js';
import { parsedFlag } from '../flag-values.js';

export interface FlagSpec<S extends z.ZodType = z.ZodType> {
  /** commander's flag text, e.g. `--limit <n>` or `--force`. */
  flag: string;
  help: string;
  schema: S;
  default?: string;
  choices?: readonly string[];
}

export type Flags = Record<string, FlagSpec>;
export type FlagShape<F extends Flags> = { [K in keyof F]: F[K]['schema'] };

/** One flag: `flag('--limit <n>', 'page size', wholeNumber(1, 1000), { default: '100' })`. */
export function flag<S extends z.ZodType>(
  text: string,
  help: string,
  schema: S,
  extra: { default?: string; choices?: readonly string[] } = {},
): FlagSpec<S> {
  return { flag: text, help, schema, ...extra };
}

/** Adds `flags` to `command`, in their order. */
export function addFlags(command: Command, flags: Flags): Command {
  for (const spec of Object.values(flags)) {
    const option = new Option(spec.flag, spec.help);
    if (spec.choices) option.choices(spec.choices);
    if (spec.default !== undefined) option.default(spec.default);
    command.addOption(option);
  }
  return command;
}

/** The zod shape of `flags`: each key's value schema. */
export function flagShape<F extends Flags>(flags: F): FlagShape<F> {
  return Object.fromEntries(Object.entries(flags).map(([key, spec]) => [key, spec.schema])) as FlagShape<F>;
}

/** `--force`, a yes/no flag whose help says what it lets the command do; absent is false. */
export function forceFlag(help: string) {
  return { force: flag('--force', help, z.boolean().default(false)) };
}

/** A whole number from `min` to `max`, written in decimal digits. */
export function wholeNumber(min: number, max: number) {
  return parsedFlag((text) => {
    const value = Number(text);
    if (!/^\d+$/.test(text.trim()) || value < min || value > max)
      throw new Error(`"${text}" is not a whole number from ${min} to ${max}`);
    return value;
  });
}

/**
 * A time: an ISO date-time (`2026-12-01T09:00:00Z`), a date (`2026-12-01`, midnight UTC) or how long
 * ago (`2h`, `7d`); answered as an ISO date-time.
 */
export function pointInTime(now: () => number = Date.now) {
  return parsedFlag((text) => {
    const trimmed = text.trim();
    if (/^\d+(\.\d+)?\s*(ms|s|m|h|d)$/.test(trimmed))
      return new Date(now() - parseDuration(trimmed)).toISOString();
    // A date, or a date-time without a zone, is UTC, as every time the CLI prints: Date.parse reads
    // the second in the host's zone, and a time copied from a table without its Z moved by the offset.
    const at = /^\d{4}-\d{2}-\d{2}$/.test(trimmed)
      ? Date.parse(`${trimmed}T00:00:00Z`)
      : /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(trimmed)
        ? Date.parse(`${trimmed.replace(' ', 'T')}Z`)
        : Date.parse(trimmed);
    if (/^\d{4}-\d{2}-\d{2}/.test(trimmed) && Number.isFinite(at)) return new Date(at).toISOString();
    throw new Error(
      `"${text}" is not a time: give an ISO date-time (2026-12-01T09:00:00Z), a date (2026-12-01) or how long ago (2h, 7d)`,
    );
  });
}
