import { readdirSync, readFileSync } from 'node:fs';

/** Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux). */
const TICKS_PER_S = 100;

export interface CpuSnapshot {
  /** The machine: busy and total CPU time over all cores since boot. */
  machineBusyMs: number;
  machineTotalMs: number;
  /**
   * A process and its children (PostgreSQL's postmaster and backends), user + system, with what its
   * ended children used (a backend that exits mid-measurement moves its time to the parent's
   * cutime/cstime once reaped: without those the sum could fall).
   */
  treeMs: number;
}

/** Where CPU time stood now: the machine's, and that of process `rootPid` with its direct children. */
export function cpuSnapshot(rootPid: number | null): CpuSnapshot {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((sum, v) => sum + v, 0);
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
  let tree = 0;
  if (rootPid !== null) {
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
        // Fields after the command (which may hold spaces) start at state: ppid is the 2nd, utime the
        // 12th, cutime the 14th.
        const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        const pid = Number(entry);
        if (pid === rootPid || Number(rest[1]) === rootPid) tree += Number(rest[11]) + Number(rest[12]);
        if (pid === rootPid) tree += Number(rest[13]) + Number(rest[14]);
      } catch {
        // The process ended while we looked.
      }
    }
  }
  const ms = (ticks: number) => (ticks * 1000) / TICKS_PER_S;
  return { machineBusyMs: ms(total - idle), machineTotalMs: ms(total), treeMs: ms(tree) };
}

/** User + system CPU time of each of `pids` (0 for one that has ended). */
export function processesCpuMs(pids: readonly number[]): number[] {
  return pids.map((pid) => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return ((Number(rest[11]) + Number(rest[12])) * 1000) / TICKS_PER_S;
    } catch {
      return 0;
    }
  });
}
