import { agentRouter } from './routers/agent.js';
import { apiKeysRouter } from './routers/api-keys.js';
import { auditRouter } from './routers/audit.js';
import { connectorsRouter } from './routers/connectors.js';
import { consoleRouter } from './routers/console.js';
import { groupsRouter } from './routers/groups.js';
import { provisioningKeysRouter } from './routers/provisioning-keys.js';
import { replicasRouter } from './routers/replicas.js';
import { signingKeysRouter } from './routers/signing-keys.js';
import { router } from './trpc.js';

export const appRouter = router({
  groups: groupsRouter,
  provisioningKeys: provisioningKeysRouter,
  connectors: connectorsRouter,
  apiKeys: apiKeysRouter,
  audit: auditRouter,
  signingKeys: signingKeysRouter,
  replicas: replicasRouter,
  agent: agentRouter,
  console: consoleRouter,
});

export type AppRouter = typeof appRouter;
