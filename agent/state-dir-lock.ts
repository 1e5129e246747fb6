import { constants } from 'node:fs';
import { open, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { readFileNoFollow } from '../shared/private-files.js';
import { isProcessRunning, processStartTicks } from './process-liveness.js';

const LOCK_FILE = 'agent.pid';
/** A lock file this young and still empty is another agent between creating and writing it. */
const BEING_WRITTEN_MS = 5_000;

/** Another agent process runs with this state dir. */
export class StateDirBusyError extends Error {
  constructor(
    readonly dir: string,
    readonly pid: number | null,
  ) {
    super(
      `another agent runs with the state dir ${dir}${pid ? ` as pid ${pid}` : ''}: stop it first ` +
        '(sudo systemctl stop connector-agent), or give this one another --state-dir. Two agents on one state dir ' +
        'would take the session from each other, and a revoke of one would wipe the identity of both',
    );
  }
}

export interface StateDirLock {
  release(): Promise<void>;
  /** Makes the lock file again if it is gone (removed with the state dir while the agent ran). */
  reassert(): Promise<void>;
}

interface Holder {
  pid: number;
  start: number | null;
}

/**
 * Makes this process the one agent of `dir`: `agent.pid` is created exclusively with its pid and
 * start time. One left by a process that is gone (killed, a power cut) is taken over. The agent is
 * a single executable, so there is no native flock here; the exclusive create decides between two
 * agents started at once.
 *
 * Taking over is the one step the exclusive create does not decide: two agents that both read the
 * dead holder would each remove "the" lock by name, the second removing the first one's new lock,
 * and both would run. So the removal happens only under a second exclusive file,
 * `agent.pid.takeover`, after reading the holder again there.
 */
export async function lockStateDir(dir: string): Promise<StateDirLock> {
  const file = join(dir, LOCK_FILE);
  const self: Holder = { pid: process.pid, start: processStartTicks(process.pid) };
  const lock: StateDirLock = {
    release: () => releaseIfOurs(file, self),
    reassert: async () => {
      // Whoever made one meanwhile (another agent started on the emptied dir) keeps it.
      await createExclusively(file, self).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'EEXIST') throw error;
      });
    },
  };
  // Bounded: another agent's takeover under way is waited for a while, then this one is busy.
  for (let attempt = 0; attempt < TAKEOVER_ATTEMPTS; attempt++) {
    try {
      await createExclusively(file, self);
      return lock;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    refuseIfHeld(dir, await readHolder(file));
    const took = await underTakeoverLock(file, async () => {
      // Read again under the takeover lock: another agent may have taken it over meanwhile.
      refuseIfHeld(dir, await readHolder(file));
      await unlink(file).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') throw error;
      });
      // An agent that found no file at all meanwhile made it: the next attempt names it.
      return createExclusively(file, self).then(
        () => true,
        (error: NodeJS.ErrnoException) => {
          if (error.code === 'EEXIST') return false;
          throw error;
        },
      );
    });
    if (took) return lock;
    await sleep(TAKEOVER_WAIT_MS);
  }
  throw new StateDirBusyError(dir, null);
}

const TAKEOVER_FILE_SUFFIX = '.takeover';
const TAKEOVER_ATTEMPTS = 40;
const TAKEOVER_WAIT_MS = 25;

/**
 * Throws StateDirBusyError while `holder` is another agent: one writing its lock, or one that still
 * runs (a holder with this very pid is a process that is gone: in a container every start is pid 1).
 */
function refuseIfHeld(dir: string, holder: Holder | 'being written' | null): void {
  if (holder === 'being written') throw new StateDirBusyError(dir, null);
  if (holder && holder.pid !== process.pid && isProcessRunning(holder.pid, holder.start))
    throw new StateDirBusyError(dir, holder.pid);
}

/**
 * Runs `take` holding `<file>.takeover` (created exclusively, removed after) and answers what it
 * answers; false, without running it, while another agent holds that. One left by an agent that
 * died mid-takeover (a few milliseconds' window) is removed once older than BEING_WRITTEN_MS.
 */
async function underTakeoverLock(file: string, take: () => Promise<boolean>): Promise<boolean> {
  const takeover = file + TAKEOVER_FILE_SUFFIX;
  try {
    await (await openExclusively(takeover)).close();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    const info = await stat(takeover).catch(() => null);
    if (info && Date.now() - info.mtimeMs >= BEING_WRITTEN_MS) await unlink(takeover).catch(() => {});
    return false;
  }
  try {
    return await take();
  } finally {
    await unlink(takeover).catch(() => {});
  }
}

/** Creates `file` (0600) for writing; EEXIST when it is there, whoever made it. */
function openExclusively(file: string) {
  return open(
    file,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | (constants.O_NOFOLLOW ?? 0),
    0o600,
  );
}

async function createExclusively(file: string, self: Holder): Promise<void> {
  const handle = await openExclusively(file);
  try {
    await handle.writeFile(JSON.stringify(self));
  } catch (error) {
    // An empty or partial file would read as another agent's lock being written for a while:
    // this process made it, and holds nothing, so it goes (a full disk, then a retry at once).
    await handle.close().catch(() => {});
    await unlink(file).catch(() => {});
    throw error;
  }
  await handle.close();
}

async function readHolder(file: string): Promise<Holder | 'being written' | null> {
  try {
    const parsed = JSON.parse(await readFileNoFollow(file)) as Partial<Holder>;
    if (typeof parsed.pid === 'number') return { pid: parsed.pid, start: parsed.start ?? null };
  } catch {
    // Empty or damaged: below.
  }
  const info = await stat(file).catch(() => null);
  return info && Date.now() - info.mtimeMs < BEING_WRITTEN_MS ? 'being written' : null;
}

async function releaseIfOurs(file: string, self: Holder): Promise<void> {
  const holder = await readHolder(file).catch(() => null);
  if (holder && holder !== 'being written' && holder.pid === self.pid) await unlink(file).catch(() => {});
}
