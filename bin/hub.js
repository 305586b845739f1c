#!/usr/bin/env node
// Runs the hub's TypeScript entry point through tsx (its documented ESM API), from any working directory.
import { fileURLToPath } from 'node:url';
import { register } from 'tsx/esm/api';

register({ tsconfig: fileURLToPath(new URL('../tsconfig.json', import.meta.url)) });
await import('../hub/src/main.ts');
