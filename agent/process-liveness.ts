import { readFileSync } from 'node:fs';

/**
 * When process `pid` started, in clock ticks since boot (field 22 of Linux's /proc/<pid>/stat); null
 * where there is no /proc or the process is gone. Together with the pid it names one process: a pid
 * alone may have been reused by another since.
 */
export function processStartTicks(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count from after its last ')'.
    const ticks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    return Number.isSafeInteger(ticks) ? ticks : null;
  } catch {
    return null;
  }
}

/**
 * Whether the process that recorded (`pid`, `startTicks`) still runs: signal 0 checks the pid
 * exists (EPERM: it does, as another user's), and the start time, when both are known, that it is
 * still the same process.
 */
export function isProcessRunning(pid: number, startTicks: number | null | undefined): boolean {
  // 0 and negative pids address process groups, not a process.
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  if (startTicks === null || startTicks === undefined) return true;
  const now = processStartTicks(pid);
  return now === null || now === startTicks;
}
