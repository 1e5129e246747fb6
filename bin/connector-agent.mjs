#!/usr/bin/env node
// `npx connector-agent …` from a clone, from source; hosts run the single executable instead
// (npm run build:agent).
import { register } from 'tsx/esm/api';

register();
await import('../agent/main.ts');
