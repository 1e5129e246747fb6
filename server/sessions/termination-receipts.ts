import type { Termination } from '../services/views.js';
import type { AgentSession, LiveSession } from './live-session.js';

/** The session's final event, which the agent acknowledges. */
export type FinalEvent = 'revoked' | 'deleted';

export const PENDING: Termination = { state: 'pending', confirmedAt: null, confirmedFrom: null };

interface Receipt {
  live: LiveSession;
  event: FinalEvent;
  timer: NodeJS.Timeout;
  outcome: Promise<Termination>;
  resolve(termination: Termination): void;
}

export interface TerminationReceiptsOptions {
  /** How long an ended session waits for its acknowledgement before it counts as pending. */
  timeoutMs: number;
  /** Called once per receipt, when it is acknowledged, runs out or its socket closes first. */
  onSettled(live: LiveSession, termination: Termination): void;
}

/**
 * Sessions a revoke or delete ended with a final event, each waiting (up to a bound) for its agent
 * to say it heard it: at most one per connector, kept only until the acknowledgement, the bound or
 * the socket's close, whichever comes first. A revoke waits on the outcome without holding up
 * anything else.
 */
export class TerminationReceipts {
  private readonly waiting = new Map<string, Receipt>();

  constructor(private readonly o: TerminationReceiptsOptions) {}

  /** Starts waiting for `live`'s acknowledgement of `event`. */
  expect(live: LiveSession, event: FinalEvent): void {
    const connectorId = live.agent.connectorId;
    const earlier = this.waiting.get(connectorId);
    if (earlier) this.settle(earlier, PENDING);
    let resolve!: (termination: Termination) => void;
    const outcome = new Promise<Termination>((r) => {
      resolve = r;
    });
    const receipt: Receipt = {
      live,
      event,
      outcome,
      resolve,
      timer: setTimeout(() => this.settle(receipt, PENDING), this.o.timeoutMs),
    };
    receipt.timer.unref();
    this.waiting.set(connectorId, receipt);
    // A peer that hangs up without a word (an agent from before receipts) needs no longer wait.
    live.agent.ws.once('close', () => this.settle(receipt, PENDING));
  }

  /** Whether `live` waits for its acknowledgement: until then its socket stays open. */
  isWaiting(live: LiveSession): boolean {
    return this.waiting.get(live.agent.connectorId)?.live === live;
  }

  /** Whether `agent` is a session that ended with a final event and has not acknowledged it yet. */
  awaitsAcknowledgement(agent: AgentSession): boolean {
    return this.waiting.get(agent.connectorId)?.live.agent === agent;
  }

  /** Settles `agent`'s receipt as confirmed; false if it waits for none, or for another event. */
  acknowledge(agent: AgentSession, event: FinalEvent, at: number): boolean {
    const receipt = this.waiting.get(agent.connectorId);
    if (receipt?.live.agent !== agent || receipt.event !== event) return false;
    this.settle(receipt, {
      state: 'confirmed',
      confirmedAt: new Date(at).toISOString(),
      confirmedFrom: agent.remoteAddress,
    });
    return true;
  }

  /** Whether a session of this connector ended here waits for its acknowledgement. */
  isExpecting(connectorId: string): boolean {
    return this.waiting.has(connectorId);
  }

  /** What became of the session a revoke or delete of this connector just ended: pending at once if none waits. */
  outcome(connectorId: string): Promise<Termination> {
    return this.waiting.get(connectorId)?.outcome ?? Promise.resolve(PENDING);
  }

  /** Settles every receipt as pending (server shutdown). */
  settleAll(): void {
    for (const receipt of [...this.waiting.values()]) this.settle(receipt, PENDING);
  }

  private settle(receipt: Receipt, termination: Termination): void {
    const connectorId = receipt.live.agent.connectorId;
    if (this.waiting.get(connectorId) !== receipt) return;
    this.waiting.delete(connectorId);
    clearTimeout(receipt.timer);
    receipt.resolve(termination);
    this.o.onSettled(receipt.live, termination);
  }
}
