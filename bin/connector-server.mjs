#!/usr/bin/env node
// `npx connector-server …` from a clone: tsx compiles the TypeScript source in this process (no
// tsx CLI wrapper in between, so signals reach the server itself).
import { register } from 'tsx/esm/api';

register();
await import('../server/main.ts');
