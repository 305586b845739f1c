#!/usr/bin/env node
// Runs the hub's TypeScript entry point through tsx (its documented ESM API), from any working directory.
// `hub scale ...` runs the supervisor of several workers instead (hub/src/scaling/main.ts).
import { fileURLToPath } from 'node:url';
import { register } from 'tsx/esm/api';

register({ tsconfig: fileURLToPath(new URL('../tsconfig.json', import.meta.url)) });
await import(process.argv[2] === 'scale' ? '../hub/src/scaling/main.ts' : '../hub/src/main.ts');
