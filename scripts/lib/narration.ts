/**
 * How `npm run demo` talks: its lines, their colours (only on a terminal, never with NO_COLOR), and
 * the bounded waits whose failure ends the story with one line saying what did not happen.
 */
import { describeExit, type Proc, settleWithin } from './processes.js';

/** The bound on every wait for the server, an agent, a CLI call or the admin API. */
export const WAIT_MS = 30_000;
const POLL_MS = 100;

const COLOUR = process.stdout.isTTY === true && !process.env.NO_COLOR;
const paint = (code: string) => (text: string) => (COLOUR ? `\x1b[${code}m${text}\x1b[0m` : text);
export const bold = paint('1');
export const dim = paint('2');
export const [green, red, yellow, cyan] = [paint('32'), paint('31'), paint('33'), paint('36')];

export const write = (line = '') => process.stdout.write(`${line}\n`);

/** A step that did not happen: the story ends, and this one line says why. */
export class StoryBroke extends Error {}

/** Set by Ctrl-C: the story stops at its next line instead of talking over the clean-up. */
let stopping = false;
export const stopTelling = () => {
  stopping = true;
};
export const stoppedTelling = () => stopping;

export function say(line = '') {
  if (stopping) throw new StoryBroke('interrupted');
  write(line);
}
export const note = (text: string) => {
  for (const line of text.split('\n')) say(`      ${line}`);
};
export const shell = (command: string) => note(cyan(`$ ${command}`));
/** An admin call the story makes through the typed client, shown as the CLI command that makes it. */
export const adminCall = (command: string) =>
  shell(`connector-server ${command}   ${dim('(made here through the admin client)')}`);
export const done = (what: string) => note(`${green('✓')} ${what}`);
export const quote = (text: string) => note(dim(text.trimEnd().replace(/^/gm, '  | ')));
export const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

export function expectThat(condition: unknown, what: string): asserts condition {
  if (!condition) throw new StoryBroke(what);
}

/** A key on screen: enough to tell keys apart, not enough to use one (cpk_<id>_<secret>). */
export const maskKey = (key: string) => `${key.slice(0, key.indexOf('_', 4) + 5)}…`;

/** Waits (bounded) for `pattern` in what `proc` printed; if it never comes, shows its last lines. */
export async function waitForLine(proc: Proc, pattern: RegExp, what: string): Promise<string> {
  try {
    return (await proc.waitForOutput(pattern, WAIT_MS))[0];
  } catch {
    quote(proc.tail(8));
    const exit = proc.exit();
    throw new StoryBroke(
      `${what}: ${exit ? `it exited with ${describeExit(exit)}` : `not within ${seconds(WAIT_MS)}`}`,
    );
  }
}

/** Waits (bounded) for `proc` to exit. */
export async function exitOf(proc: Proc, what: string) {
  const exit = await settleWithin(proc.exited, WAIT_MS);
  if (!exit) quote(proc.tail(8));
  expectThat(exit, `${what}: still running after ${seconds(WAIT_MS)}`);
  return exit;
}

/** Polls `probe` (bounded) until it gives something. */
export async function eventually<T>(what: string, probe: () => Promise<T | null | undefined>): Promise<T> {
  for (const deadline = performance.now() + WAIT_MS; performance.now() < deadline; ) {
    const value = await probe();
    if (value) return value;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  throw new StoryBroke(`${what}: not within ${seconds(WAIT_MS)}`);
}
