/** A session this replica admitted, as the other replicas are told of it. */
export interface SessionClaim {
  connectorId: string;
  /** This replica's number for the session (unique within the replica). */
  sessionId: number;
  remoteAddress: string;
  connectedAt: number;
}

/** A deleted connector's host acknowledged the deletion on the replica that held its session. */
export interface DeletionConfirmation {
  connectorId: string;
  /** Epoch ms. */
  confirmedAt: number;
  confirmedFrom: string | null;
}

/** Who hears of deletions confirmed on other replicas: the deletes made here that wait for one. */
export interface DeletionConfirmationListener {
  /** Whether a delete made here waits for `connectorId`'s confirmation (only those are looked up). */
  awaits(connectorId: string): boolean;
  confirmed(confirmation: DeletionConfirmation): void;
}

/** A session of this replica that must end because of what happened elsewhere. */
export interface LostSession {
  connectorId: string;
  sessionId: number;
  /**
   * The address of the session on another replica that replaced it (closed as replaced, 4009), or
   * null when this replica lost track of its sessions (its heartbeat lapsed past the bound, so the
   * others took it for dead): then it is closed without a final code and its agent reconnects.
   */
  replacedBy: string | null;
}

/**
 * One live session per connector across every replica of a deployment, and who is connected
 * where. The session registry tells it of each session it admits and ends; it tells the registry
 * which of its sessions must end. A single process needs none of it: `singleProcess`.
 */
export interface ClusterSessions {
  /** Makes the session the connector's one session in the cluster: another replica's ends. */
  claim(session: SessionClaim): void;
  /** The session ended: its claim goes, unless a newer session of the connector holds it. */
  release(connectorId: string, sessionId: number): void;
  /** Sets who is told of sessions that must end (one handler; the registry's). */
  onLost(handler: (lost: LostSession) => void): void;
  /**
   * Sets who is told of connectors whose session on another replica started or ended, as this
   * replica hears of it (one handler; the registry's, for the console's live feed).
   */
  onPresenceElsewhere(handler: (connectorIds: string[]) => void): void;
  /** Whether another live replica holds a session of the connector; synchronous and cheap. */
  isConnectedElsewhere(connectorId: string): boolean;
  /** The id of the live replica that holds the connector's session, this one's included; null: none, or one process. */
  holderOf(connectorId: string): string | null;
  /**
   * The agent of a session here acknowledged its connector's deletion: the other replicas hear it
   * (a delete made through one of them waits for it; a deleted connector has no record to carry it).
   */
  deletionConfirmed(confirmation: DeletionConfirmation): void;
  /** Sets who is told of deletions confirmed on other replicas (one listener; the registry's). */
  onDeletionConfirmedElsewhere(listener: DeletionConfirmationListener): void;
}

/** One process, no other replica: nothing to claim, nobody to tell, never connected elsewhere. */
export const singleProcess: ClusterSessions = {
  claim() {},
  release() {},
  onLost() {},
  onPresenceElsewhere() {},
  isConnectedElsewhere: () => false,
  holderOf: () => null,
  deletionConfirmed() {},
  onDeletionConfirmedElsewhere() {},
};
