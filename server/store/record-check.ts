import { z } from 'zod';
import type { StoreData } from './records.js';
import { SECTIONS, type StoreSection } from './store.js';

/**
 * The shape of each record a store holds (records.ts), checked where records come from outside the
 * server's own writes: a backup being restored, a data dir being imported. A record of the wrong
 * shape (a hand-edited or crafted file: its checksum says nothing of who wrote it) would otherwise
 * be taken, and every list that reads it answer INTERNAL_ERROR from then on. Fields added since the
 * first version are optional, as older records lack them; fields this version does not know pass.
 */
const id = z.string().min(1).max(200);
const time = z.number().finite();
const maybeTime = time.nullable();

const SHAPES: Record<StoreSection, z.ZodType> = {
  groups: z.object({
    id,
    name: z.string(),
    description: z.string(),
    status: z.enum(['enabled', 'disabled']),
    createdAt: time,
    currentKeyId: id,
  }),
  provisioningKeys: z.object({
    id,
    groupId: id,
    hash: z.string(),
    encrypted: z.string(),
    createdAt: time,
    expiresAt: time,
    supersededAt: maybeTime,
    lastUsedAt: maybeTime,
    maxUses: z.number().int().min(1).nullable().optional(),
    uses: z.number().int().min(0).optional(),
  }),
  connectors: z.object({
    id,
    groupId: id,
    name: z.string(),
    status: z.enum(['enabled', 'disabled', 'revoked']),
    enrolledAt: time,
    enrolledWithKeyId: id,
    keyThumbprint: z.string(),
    agentVersion: z.string(),
    host: z.record(z.string(), z.unknown()),
    remoteAddress: z.string(),
    lastConnectedAt: maybeTime,
    lastSeenAt: maybeTime,
    lastReplacedAt: maybeTime.optional(),
    replacedFrom: z.string().nullable().optional(),
    identity: z.object({ issuedAt: time, expiresAt: time, keyId: z.string() }),
    revokedAt: maybeTime,
    revokeReason: z.string().nullable(),
    revocationConfirmedAt: maybeTime.optional(),
    revocationConfirmedFrom: z.string().nullable().optional(),
  }),
  apiKeys: z.object({
    id,
    name: z.string(),
    scope: z.enum(['read', 'admin']),
    hash: z.string(),
    createdAt: time,
    expiresAt: maybeTime,
    lastUsedAt: maybeTime,
  }),
};

/**
 * The first thing wrong with `store`, in one line naming the record and the field; null when every
 * record has its shape and is filed under its own id, every group's current key is there, and every
 * connector's group (what every list of them reads). A key whose group is gone is left alone: it is
 * read by nothing but enrollment, which refuses it.
 */
export function storeProblem(store: StoreData): string | null {
  for (const section of SECTIONS) {
    for (const [key, record] of Object.entries(store[section])) {
      const parsed = SHAPES[section].safeParse(record);
      if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        const field = issue.path.join('.') || '(the record)';
        return `${section} record ${JSON.stringify(key)}: ${field}: ${issue.message}`;
      }
      if ((record as { id: string }).id !== key)
        return `${section} record ${JSON.stringify(key)} is filed under another id than its own`;
    }
  }
  for (const group of Object.values(store.groups))
    if (!Object.hasOwn(store.provisioningKeys, group.currentKeyId))
      return `groups record ${JSON.stringify(group.id)}: its current key ${group.currentKeyId} is not in the file`;
  for (const connector of Object.values(store.connectors))
    if (!Object.hasOwn(store.groups, connector.groupId))
      return `connectors record ${JSON.stringify(connector.id)}: its group ${connector.groupId} is not in the file`;
  return null;
}
