#!/usr/bin/env node
// edge-dlq: list, show and redrive an edge agent's dead letters (README, "Dead letters"). Runs the TypeScript
// sources through tsx, like bin/edge-agent.js.
import { register } from 'tsx/esm/api';
register();
const { main } = await import('../edge-agent/src/cli/dead-letters.ts');
process.exitCode = await main(process.argv.slice(2));
