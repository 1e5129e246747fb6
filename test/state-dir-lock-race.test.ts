import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { makeTempDir, type Proc, removeTempDir, spawnTs } from './helpers/processes.js';

const RACERS = 4;
const ROUNDS = 40;
const ROUND_MS = 40;

const racers: Proc[] = [];
let root = '';
afterEach(async () => {
  await Promise.all(racers.splice(0).map((racer) => racer.stop('SIGKILL')));
  if (root) removeTempDir(root);
});

describe('the agent state dir lock, taken over by several agents at once', () => {
  it('a lock left by a process that is gone goes to exactly one of the agents that find it together', async () => {
    root = makeTempDir('ce-lock-race-');
    const dirs = Array.from({ length: ROUNDS }, (_, round) => {
      const dir = join(root, `state-${round}`);
      mkdirSync(dir, { mode: 0o700 });
      // pid 1 runs, but not since this start time: a lock its holder left behind.
      writeFileSync(join(dir, 'agent.pid'), JSON.stringify({ pid: 1, start: 1 }), { mode: 0o600 });
      return dir;
    });
    // Node's start-up differs per process: the first round begins once all have surely started.
    const startAt = Date.now() + 4000;
    for (let i = 0; i < RACERS; i++)
      racers.push(spawnTs('test/helpers/lock-racer.ts', [String(startAt), String(ROUND_MS), ...dirs]));
    const reports = await Promise.all(
      racers.map(async (racer) => {
        const [line] = await racer.waitForOutput(/\{"pid".*\}/, 30_000);
        return JSON.parse(line!) as { pid: number; won: number[]; errors: string[] };
      }),
    );
    expect(reports.flatMap((r) => r.errors)).toEqual([]);
    const winners = Array.from(
      { length: ROUNDS },
      (_, round) => reports.filter((r) => r.won.includes(round)).length,
    );
    // Every round had a winner, and only one.
    expect(winners).toEqual(Array(ROUNDS).fill(1));
  }, 60_000);
});
