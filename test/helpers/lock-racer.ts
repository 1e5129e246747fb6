/**
 * One of several processes racing for the state-dir locks of `dirs` (test/state-dir-lock-race.test.ts).
 * Round i starts at `startAt + i * roundMs` (wall clock, shared by the racers); in each, this process
 * tries to lock dir i and keeps whatever it won until the last round is over, so that a racer that
 * comes later in the round meets a live holder. It prints one JSON line: the rounds it won.
 *
 *   node --import tsx test/helpers/lock-racer.ts <startAt> <roundMs> <dir>...
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { lockStateDir, StateDirBusyError } from '../../agent/state-dir-lock.js';

const [startAtArg, roundMsArg, ...dirs] = process.argv.slice(2);
const startAt = Number(startAtArg);
const roundMs = Number(roundMsArg);
const won: number[] = [];
const errors: string[] = [];
for (const [round, dir] of dirs.entries()) {
  const wait = startAt + round * roundMs - Date.now();
  if (wait > 0) await sleep(wait);
  try {
    await lockStateDir(dir);
    won.push(round);
  } catch (error) {
    if (!(error instanceof StateDirBusyError)) errors.push(`${round}: ${(error as Error).message}`);
  }
}
process.stdout.write(`${JSON.stringify({ pid: process.pid, won, errors })}\n`);
// Held until every racer has printed: the test stops us.
await sleep(60_000);
