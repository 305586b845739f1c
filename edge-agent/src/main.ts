/** Entry point: `edge-agent --config agent.yaml`. Only wiring and signals. */
import { ConfigError } from '../../shared/config.js';
import { createLogger } from '../../shared/logger.js';
import { EdgeAgent } from './agent.js';
import { loadAgentConfig } from './config.js';

const log = createLogger('edge-agent');
let agent: EdgeAgent;
try {
  const config = loadAgentConfig();
  agent = new EdgeAgent(config, log.child({ agent: config.agentId }));
} catch (error) {
  if (error instanceof ConfigError) {
    process.stderr.write(`${error.message}\n`);
    process.exit(2);
  }
  throw error;
}
let stopping = false;
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    agent.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        log.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  });
}
try {
  await agent.start();
} catch (error) {
  // Some config is only checked when its part starts (device lists, password hashes, API keys): same clear exit.
  if (error instanceof ConfigError) {
    process.stderr.write(`${error.message}\n`);
    process.exit(2);
  }
  throw error;
}
