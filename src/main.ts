/**
 * The gateway process: read the config, build the gateway, listen on the public and admin
 * ports, drain on SIGTERM/SIGINT.
 *
 * Exit codes: 0 after a clean shutdown, 2 for an invalid config (nothing was listened on),
 * 1 for anything else that stops start-up (a port in use, say).
 *
 * @module
 */
import { createGateway } from "./app.ts";
import { readCgroupLimits } from "./config/cgroup.ts";
import { loadConfig, readConfigJson, resolveConfigPath } from "./config/load.ts";
import { ConfigError, formatProblem } from "./config/schema.ts";
import { createLogger } from "./telemetry/mod.ts";

const env = Deno.env.toObject();
const logger = createLogger();
const configPath = resolveConfigPath(Deno.args, env);

let loaded;
try {
  loaded = loadConfig(readConfigJson(configPath), env, readCgroupLimits());
} catch (error) {
  if (error instanceof ConfigError) {
    console.error(`breakwater: invalid config ${configPath}`);
    for (const problem of error.problems) console.error(formatProblem(problem));
    logger.flush();
    Deno.exit(2);
  }
  throw error;
}
const { config, notes } = loaded;
logger.info("config loaded", {
  path: configPath,
  services: Object.keys(config.services),
  cgroup: notes.cgroup,
  capped: notes.capped,
});

const gateway = createGateway(config, { env, logger });

const publicServer = Deno.serve({
  hostname: config.listen.hostname,
  port: config.listen.port,
  onListen: () => {},
}, gateway.app.fetch);
const adminServer = Deno.serve({
  hostname: config.admin.hostname,
  port: config.admin.port,
  onListen: () => {},
}, gateway.adminApp.fetch);

await gateway.ready;
logger.info("listening", {
  hostname: publicServer.addr.hostname,
  port: publicServer.addr.port,
  adminHostname: adminServer.addr.hostname,
  adminPort: adminServer.addr.port,
  degraded: gateway.breaker.degraded(),
});

let shuttingDown = false;
async function shutdown(signal: Deno.Signal): Promise<void> {
  if (shuttingDown) return;
  shuttingDown = true;
  logger.info("shutdown started", { signal, inFlight: gateway.inFlight() });
  gateway.drain();
  const deadline = Date.now() + config.shutdown.timeoutMs;
  if (config.shutdown.drainDelayMs > 0) {
    // Time for load balancers to see /readyz fail before the listener goes away.
    await new Promise((resolve) => setTimeout(resolve, config.shutdown.drainDelayMs));
  }
  const remainingMs = Math.max(0, deadline - Date.now());
  let timer: ReturnType<typeof setTimeout> | undefined;
  const finished = await Promise.race([
    publicServer.shutdown().then(() => true),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), remainingMs);
    }),
  ]);
  clearTimeout(timer);
  if (!finished) {
    logger.warn("shutdown timeout passed with requests in flight", {
      inFlight: gateway.inFlight(),
    });
  }
  await gateway.close();
  await adminServer.shutdown();
  logger.info("shutdown complete", { clean: finished });
  logger.flush();
  Deno.exit(0);
}

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.addSignalListener(signal, () => void shutdown(signal));
}
