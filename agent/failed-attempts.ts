import ms from 'ms';

/** A line to log about the retry being scheduled (the caller adds the delay). */
export interface RetryNotice {
  message: string;
  fields: Record<string, unknown>;
}

/**
 * At the 60 s backoff cap, doublings alone come an hour, then two, then four apart: an operator
 * reading the journal of an agent that has been failing all night would see nothing for hours and
 * could take it for hung. So a problem is said again at least this often while attempts fail.
 */
export const SAY_AGAIN_AT_LEAST_EVERY_MS = 15 * 60_000;

/** Distinct problems remembered between sessions, whatever the errors say. */
const MAX_PROBLEMS = 16;

/**
 * What an agent says about its failed attempts to connect. Each distinct problem is said once (its
 * `first` wording), then again at the 2nd, 4th, 8th, … failed attempt since the last session, and
 * at least every `sayAgainEveryMs`: a log that grows slowly yet shows the agent still trying.
 * Every distinct problem is kept: with several servers down, attempts alternate between theirs.
 */
export class FailedAttempts {
  private readonly said = new Set<string>();
  private count = 0;
  private firstFailureAt: number | null = null;
  private lastSaidAt = 0;

  constructor(
    private readonly now: () => number = Date.now,
    private readonly sayAgainEveryMs = SAY_AGAIN_AT_LEAST_EVERY_MS,
    /** What the attempts are for, in the repeat's words: `still cannot connect after 8 attempts`. */
    private readonly attemptsTo: 'connect' | 'enroll' = 'connect',
  ) {}

  /** One more failed attempt, because of `problem`: what to say about it, or null for nothing. */
  failed(problem: string, first: string): RetryNotice | null {
    const now = this.now();
    this.count++;
    this.firstFailureAt ??= now;
    if (this.said.has(problem)) {
      const doubling = (this.count & (this.count - 1)) === 0;
      if (!doubling && now - this.lastSaidAt < this.sayAgainEveryMs) return null;
      this.lastSaidAt = now;
      return {
        message: `still cannot ${this.attemptsTo} after ${this.count} attempts; retrying`,
        fields: { error: problem, failingFor: ms(Math.max(0, now - this.firstFailureAt)) },
      };
    }
    if (this.said.size >= MAX_PROBLEMS) this.said.clear();
    this.said.add(problem);
    this.lastSaidAt = now;
    return { message: first, fields: { error: problem } };
  }

  /** Failed attempts since the last session: what the backoff grows by (see session.ts). */
  get attempts(): number {
    return this.count;
  }

  /** A session was established: the next failure is a new story, said from its start. */
  connected(): void {
    this.said.clear();
    this.count = 0;
    this.firstFailureAt = null;
  }
}
