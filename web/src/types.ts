import type { inferRouterOutputs } from '@trpc/server';
import type { AppRouter } from '../../shared/router-type.js';

type Outputs = inferRouterOutputs<AppRouter>;
export type Group = Outputs['groups']['list'][number];
export type ApiKeyRow = Outputs['apiKeys']['list'][number];
export type ProvisioningKey = Outputs['provisioningKeys']['get'];

/** A group with its current provisioning key's expiry and state (from the API keys list). */
export interface GroupRow extends Group {
  key: Pick<ApiKeyRow, 'expiresAt' | 'status'> | null;
}
export type Connector = Outputs['connectors']['list']['items'][number];
export type AuditEvent = Outputs['audit']['list'][number];
