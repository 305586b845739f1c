/**
 * npm run stack -- up|down|status [--test-ports]
 *
 *   up       fetch/build the servers if needed, start NATS x3 + QuestDB detached, wait for health, print URLs
 *   down     stop the stack (pid files: SIGTERM, then SIGKILL after 15 s)
 *   status   pid / alive / healthy per process and the JetStream meta leader
 *
 * Default ports and directory: NATS 4222-4224 (cluster 6222-6224, monitor 8222-8224), QuestDB 9000/8812,
 * .runtime/stack. With --test-ports: the ports `npm test` uses (1xxxx) and .runtime/test-stack.
 */
import { ensureRuntime } from './lib/runtime.js';
import {
  DEFAULT_PORTS,
  DEFAULT_STACK_DIR,
  stackStatus,
  startStack,
  stopStack,
  TEST_PORTS,
  TEST_STACK_DIR,
  type StackPorts,
  type StackStatus,
} from './lib/stack.js';

function usage(): never {
  process.stderr.write('usage: npm run stack -- up|down|status [--test-ports]\n');
  process.exit(2);
}

function printUrls(ports: StackPorts, dir: string): void {
  const lines = [
    `NATS:            ${ports.natsClient.map((p) => `nats://127.0.0.1:${p}`).join(',')}`,
    `NATS monitoring: ${ports.natsMonitor.map((p) => `http://127.0.0.1:${p}`).join(' ')}`,
    `QuestDB console: http://127.0.0.1:${ports.questdbHttp}`,
    `QuestDB psql:    PGPASSWORD=quest psql -h 127.0.0.1 -p ${ports.questdbPg} -U admin -d qdb`,
    `Stack dir:       ${dir} (logs in ${dir}/logs)`,
  ];
  console.log(lines.join('\n'));
}

function printStatus(s: StackStatus): void {
  const rows = [
    ['process', 'pid', 'alive', 'healthy', 'endpoint'],
    ...s.processes.map((p) => [p.name, p.pid === null ? '-' : String(p.pid), p.alive ? 'yes' : 'no', p.healthy ? 'yes' : 'no', p.url]),
  ];
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  for (const r of rows) console.log(r.map((cell, c) => cell.padEnd(widths[c] ?? 0)).join('  ').trimEnd());
  console.log(`NATS meta leader: ${s.metaLeader ?? '(none)'}`);
  console.log(`stack: ${s.healthy ? 'running and healthy' : s.running ? 'DEGRADED (some processes down or unhealthy)' : 'stopped'} (${s.dir})`);
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const testPorts = args.includes('--test-ports');
  const cmd = args.filter((a) => a !== '--test-ports')[0];
  const ports = testPorts ? TEST_PORTS : DEFAULT_PORTS;
  const dir = testPorts ? TEST_STACK_DIR : DEFAULT_STACK_DIR;

  switch (cmd) {
    case 'up': {
      const before = await stackStatus(dir, ports);
      if (before.healthy) {
        console.log('stack is already running and healthy.');
        printUrls(ports, dir);
        return 0;
      }
      const t0 = Date.now();
      const runtime = await ensureRuntime((s) => console.log(s));
      await startStack({ dir, ports, detached: true, runtime, log: (s) => console.log(s) });
      const status = await stackStatus(dir, ports);
      console.log(`stack is up in ${((Date.now() - t0) / 1000).toFixed(1)} s (meta leader: ${status.metaLeader ?? '?'}).`);
      printUrls(ports, dir);
      console.log('stop it with: npm run stack -- down' + (testPorts ? ' --test-ports' : ''));
      return 0;
    }
    case 'down': {
      const stopped = await stopStack(dir);
      if (stopped.length === 0) console.log(`no stack processes running in ${dir}.`);
      for (const s of stopped) console.log(`stopped ${s.name} (pid ${s.pid})${s.forced ? ' with SIGKILL' : ''}`);
      const after = await stackStatus(dir, ports);
      if (after.running) {
        console.error('some processes are still running:');
        printStatus(after);
        return 1;
      }
      console.log('stack is down.');
      return 0;
    }
    case 'status': {
      const s = await stackStatus(dir, ports);
      printStatus(s);
      return s.healthy ? 0 : s.running ? 1 : 3;
    }
    default:
      return usage();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`stack: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
