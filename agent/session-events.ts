import { z } from 'zod';
import type { SessionEvent } from '../shared/protocol.js';

// The events of `agent.session` as the agent takes them. tRPC hands over whatever the server sent,
// typed by the router but unchecked: a status that is neither enabled nor disabled was written to
// status.json and logged as "connector <anything> by an admin".

const status = z.enum(['enabled', 'disabled']);

const sessionEventSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('ready'),
    connectorId: z.string().max(64),
    groupId: z.string().max(64),
    status,
    hostDigest: z.string().max(128).nullable().optional(),
  }),
  z.object({ type: z.literal('status'), status, scope: z.enum(['connector', 'group']) }),
  // Checked further before it is saved (identity-check.ts).
  z.object({ type: z.literal('identity'), identityToken: z.string(), identityExpiresAt: z.string() }),
  // A revoke's reason is an admin's text: kept short in the log and the status file.
  z.object({
    type: z.literal('revoked'),
    reason: z
      .string()
      .nullable()
      .optional()
      .transform((reason) => (reason ? reason.slice(0, 500) : null)),
  }),
  z.object({ type: z.literal('deleted') }),
]);

/** `data` as a session event the agent acts on, or null when it is none (then it is ignored). */
export function parseSessionEvent(data: unknown): SessionEvent | null {
  const parsed = sessionEventSchema.safeParse(data);
  return parsed.success ? (parsed.data as SessionEvent) : null;
}
