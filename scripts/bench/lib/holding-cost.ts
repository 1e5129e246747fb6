/**
 * What a server spends holding sessions, as opposed to opening them: agents' pings, timers, the
 * feed's reads. A server's CPU rate while idle is taken as linear in the sessions it holds, fitted
 * through two readings (before a step, and after it with all its sessions), so that a turn of a
 * step can be charged what the server would have spent anyway holding what it held during it.
 *
 * Why it matters: the replicas take their sessions in turns, so the window over which their CPU is
 * counted is three times as long as the embedded server's, and each replica holds its sessions over
 * the turns after its own. Their raw CPU per connect charges that holding to the handshakes.
 */
export interface IdleReading {
  sessions: number;
  cpuMsPerS: number;
}

/** The idle rate (ms of CPU per second) at `sessions`, on the line through two readings (never below 0). */
export function idleRateAt(before: IdleReading, after: IdleReading, sessions: number): number {
  const span = after.sessions - before.sessions;
  const slope = span > 0 ? Math.max(0, (after.cpuMsPerS - before.cpuMsPerS) / span) : 0;
  return Math.max(0, before.cpuMsPerS + slope * (sessions - before.sessions));
}

export interface Turn {
  /** Wall time of the turn. */
  ms: number;
  /** Each server's CPU in the turn. */
  cpuMs: number[];
  /** Each server's sessions at the turn's start and end (a taking server's ramp is taken as linear). */
  sessionsFrom: number[];
  sessionsTo: number[];
}

/**
 * The servers' CPU per new session with each turn's holding cost taken off: for each server and
 * turn, its idle rate at the turn's mean session count times the turn's length. Null without turns
 * or new sessions.
 */
export function marginalCpuUsPerSession(
  turns: readonly Turn[],
  idle: ReadonlyArray<{ before: IdleReading; after: IdleReading }>,
): number | null {
  let cpuMs = 0;
  let newSessions = 0;
  for (const turn of turns) {
    for (const [i, used] of turn.cpuMs.entries()) {
      const from = turn.sessionsFrom[i] ?? 0;
      const to = turn.sessionsTo[i] ?? 0;
      const rate = idleRateAt(idle[i]!.before, idle[i]!.after, (from + to) / 2);
      cpuMs += used - (rate * turn.ms) / 1000;
      newSessions += to - from;
    }
  }
  return newSessions > 0 ? (cpuMs * 1000) / newSessions : null;
}
