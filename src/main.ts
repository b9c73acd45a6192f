/**
 * The gateway process: parse the command line, read and validate the config, build the
 * gateway, listen on the public and admin ports, reload the config on SIGHUP, drain on SIGTERM
 * or SIGINT.
 *
 * Exit codes: 0 after a clean shutdown (and for `--help`, `--version`, a valid `--check`),
 * 2 for an invalid config or command line (nothing was listened on), 1 for anything else that
 * stops start-up (a port in use, a missing permission).
 *
 * @example
 * ```ts
 * // What `deno task demo` does: run the gateway in this process on another config.
 * import { main } from "./src/main.ts";
 * Deno.exit(await main(["--config", "demo/breakwater.json"]));
 * ```
 *
 * @module
 */
import type { Gateway } from "./app.ts";
import { deadline, DeadlineError } from "./async/deadline.ts";
import { delay } from "./async/delay.ts";
import {
  configPathFor,
  explainMissingPermission,
  explainPermissionError,
  isPermissionError,
  parseArgs,
  USAGE,
  UsageError,
  VERSION,
} from "./cli.ts";
import { readCgroupLimits } from "./config/cgroup.ts";
import { threadsFor } from "./workers/count.ts";
import { createSharedProber, type SharedProber } from "./workers/shared_prober.ts";
import { loadConfig, type LoadNotes, readConfigJson } from "./config/load.ts";
import { ConfigError, formatProblem, type GatewayConfig } from "./config/schema.ts";
import { createLogger, type Logger } from "./telemetry/access_log.ts";
import { type Handler, type Http1Server, serveHttp1 } from "./server/http1_server.ts";
import { serveTls, type TlsHandler, type TlsServer } from "./server/tls_server.ts";
import { readCertificatePair, redirectToHttps } from "./gateway/tls_listener.ts";

type Env = Record<string, string | undefined>;
type Loaded = { config: GatewayConfig; notes: LoadNotes };

/**
 * Runs the gateway as the command line asks and resolves with the process's exit code: at
 * once for `--help`, `--version`, `--check` and start-up failures, after the drain for a
 * gateway that ran.
 *
 * @param args the arguments after the script (`Deno.args`)
 * @param env the environment; read from `Deno.env` when omitted
 */
export async function main(args: readonly string[], env?: Env): Promise<number> {
  let command;
  try {
    command = parseArgs(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`breakwater: ${error.message}\n\n${USAGE}`);
    return 2;
  }
  if (command.kind === "help") {
    console.log(USAGE);
    return 0;
  }
  if (command.kind === "version") {
    console.log(`breakwater ${VERSION}`);
    return 0;
  }
  try {
    env ??= Deno.env.toObject();
  } catch (error) {
    if (!isPermissionError(error)) throw error;
    console.error(
      "breakwater: Deno was not granted env access; add --allow-env (the gateway reads PORT, " +
        "BREAKWATER_*, DENO_KV_ACCESS_TOKEN and OTEL_*)",
    );
    return 1;
  }
  const configPath = configPathFor(command.configFlag, env);
  const loaded = load(configPath, env);
  if (typeof loaded === "number") return loaded;
  if (command.check) {
    console.log(summary(configPath, loaded));
    return 0;
  }
  return await run(configPath, loaded, env);
}

/** Reads and validates the config as start-up does; an exit code when that fails. */
function load(configPath: string, env: Env): Loaded | number {
  // Opened once up front so a refused read is reported as the permission problem it is, not
  // as "invalid config" (the loader turns every read failure into a config problem).
  try {
    Deno.openSync(configPath).close();
  } catch (error) {
    if (isPermissionError(error)) {
      console.error(explainPermissionError(error, "read", configPath, "the config"));
      return 1;
    }
    // Not found and the like: the loader reports them with the config's other problems.
  }
  let loaded: Loaded;
  try {
    loaded = loadConfig(readConfigJson(configPath), env, readCgroupLimits());
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(`breakwater: invalid config ${configPath}`);
    for (const problem of error.problems) console.error(formatProblem(problem));
    return 2;
  }
  const refused = kvPermissionProblem(loaded.config.kv.path);
  if (refused !== null) {
    console.error(refused);
    return 1;
  }
  // A certificate that cannot serve is a config problem found before anything listens.
  if (loaded.config.listen.tls !== null) {
    try {
      readCertificatePair(loaded.config.listen.tls);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      console.error(`breakwater: invalid config ${configPath}`);
      for (const problem of error.problems) console.error(formatProblem(problem));
      return 2;
    }
  }
  return loaded;
}

/**
 * A KV file needs read and write access to itself and its folder (SQLite keeps `-wal` and
 * `-shm` files beside it, and the gateway creates the folder). Without them the gateway would
 * start degraded forever, which hides a deployment mistake behind the KV-outage fallback.
 */
function kvPermissionProblem(kvPath: string | null): string | null {
  if (kvPath === null || kvPath === ":memory:" || /^https?:\/\//i.test(kvPath)) return null;
  const slash = kvPath.lastIndexOf("/");
  const folder = slash > 0 ? kvPath.slice(0, slash) : slash === 0 ? "/" : ".";
  const granted = (name: "read" | "write") =>
    Deno.permissions.querySync({ name, path: kvPath }).state === "granted";
  if (!granted("read") || !granted("write")) {
    return explainMissingPermission(["read", "write"], folder, "the KV folder of kv.path");
  }
  return null;
}

/** `breakwater: config ./breakwater.json OK: 2 services (catalog /api/catalog, …), …`. */
function summary(configPath: string, { config, notes }: Loaded): string {
  const services = Object.values(config.services).map((service) =>
    `${service.name} ${service.prefix}`
  );
  const kv = config.kv.path ?? "default (Deno.openKv())";
  const capped = notes.capped.length > 0
    ? `, capped by cgroup limits: ${notes.capped.join("; ")}`
    : "";
  const tls = config.listen.tls;
  const https = tls === null
    ? ""
    : tls.port === null
    ? " (HTTPS)"
    : ` (HTTPS on ${tls.port}${config.listen.redirectToHttps ? ", plain redirects" : ""})`;
  // The thread count as start-up will resolve it (README, "Workers"); one thread says nothing,
  // and neither does the default "auto" that a TLS listener keeps to one thread.
  const threads = threadsFor(config.workers, tls !== null, notes.cgroup);
  const workers = threads.singleBecauseOfTls === "asked"
    ? `, 1 thread (${threads.asked} workers asked; the TLS listener runs on one)`
    : threads.count === 1
    ? ""
    : `, ${threads.count} workers`;
  return `breakwater: config ${configPath} OK: ${services.length} service${
    services.length === 1 ? "" : "s"
  } (${services.join(", ")}), listen ${config.listen.hostname}:${config.listen.port}${https}` +
    `${workers}, admin ${config.admin.hostname}:${config.admin.port}, kv ${kv}${capped}`;
}

/** A listening server, whichever HTTP server implementation serves it. */
interface Listener {
  /** The bound address (port 0 in the config becomes the real port here). */
  addr: { hostname: string; port: number };
  /** Stops accepting and resolves once the requests in flight finished. */
  shutdown(): Promise<void>;
}

/** Binding `which` to `hostname:port` failed. */
class ListenError extends Error {
  constructor(which: string, hostname: string, port: number, cause: unknown) {
    const reason = cause instanceof Deno.errors.AddrInUse
      ? "the address is already in use"
      : cause instanceof Deno.errors.NotCapable
      ? "Deno was not granted net access; add --allow-net"
      : String((cause as Error)?.message ?? cause);
    super(`breakwater: cannot listen on ${hostname}:${port} (${which}): ${reason}`, { cause });
  }
}

/** The gateway's listeners: plain public (unless TLS took its port), TLS, admin. */
interface Servers {
  public: Listener | null;
  tls: TlsServer | null;
  admin: Listener;
}

type Address = { hostname: string; port: number };

/**
 * Serves `handler` on `address` with the gateway's own HTTP/1.1 server and the config's
 * limits; a failed bind becomes a ListenError naming `which`. Both the single-thread and the
 * workers path listen through it, so the two cannot drift apart.
 */
function serveOn(
  config: GatewayConfig,
  which: string,
  address: Address,
  handler: Handler,
): Http1Server {
  // Both ports run on the gateway's own HTTP/1.1 server: Deno.serve has no head or idle
  // timeouts and lets the Host header steer Request.url (README, "Security and failure
  // behaviour"). The admin port is loopback by default, but deployments open it to scrapers.
  try {
    return serveHttp1({
      hostname: address.hostname,
      port: address.port,
      headerTimeoutMs: config.limits.headerTimeoutMs,
      idleTimeoutMs: config.limits.idleTimeoutMs,
      bodyIdleTimeoutMs: config.limits.bodyIdleTimeoutMs,
      maxConnections: config.limits.maxClientConnections,
    }, handler);
  } catch (error) {
    throw new ListenError(which, address.hostname, address.port, error);
  }
}

/**
 * Listens on the public and admin ports. The one place that picks the HTTP server, so
 * swapping `Deno.serve` for another server with the same handler shape is a local edit.
 */
function listen(config: GatewayConfig, gateway: Gateway): Servers {
  const serve = (which: string, address: Address, handler: Handler) =>
    serveOn(config, which, address, handler);
  const tls = config.listen.tls;
  // With tls.port the plain port stays beside TLS; without, listen.port itself speaks TLS.
  const tlsAddress = tls === null
    ? null
    : { hostname: config.listen.hostname, port: tls.port ?? config.listen.port };
  let tlsServer: TlsServer | null = null;
  if (tls !== null && tlsAddress !== null) {
    try {
      tlsServer = serveTls({
        ...tlsAddress,
        ...readCertificatePair(tls),
        http2: tls.http2,
        headerTimeoutMs: config.limits.headerTimeoutMs,
        idleTimeoutMs: config.limits.idleTimeoutMs,
        bodyIdleTimeoutMs: config.limits.bodyIdleTimeoutMs,
        maxConnections: config.limits.maxClientConnections,
      }, gateway.app.fetch as TlsHandler); // with its direct entry point, as on the plain port
    } catch (error) {
      if (error instanceof ConfigError) throw error;
      throw new ListenError("tls", tlsAddress.hostname, tlsAddress.port, error);
    }
  }
  const started: { shutdown(): Promise<void> }[] = tlsServer === null ? [] : [tlsServer];
  try {
    const plainHandler: Handler = tlsServer !== null && config.listen.redirectToHttps
      ? redirectToHttps(tlsServer.addr.port, gateway.app.fetch)
      : gateway.app.fetch;
    const publicServer = tls !== null && tls.port === null
      ? null
      : serve("public", config.listen, plainHandler);
    if (publicServer !== null) started.push(publicServer);
    return {
      public: publicServer,
      tls: tlsServer,
      admin: serve("admin", config.admin, gateway.adminApp.fetch),
    };
  } catch (error) {
    for (const server of started) void server.shutdown();
    throw error;
  }
}

/** Resolves with the first of SIGTERM or SIGINT; later ones are ignored (one drain). */
function nextShutdownSignal(): { signal: Promise<Deno.Signal>; remove(): void } {
  const signals = ["SIGTERM", "SIGINT"] as const;
  const handlers: [Deno.Signal, () => void][] = [];
  const signal = new Promise<Deno.Signal>((resolve) => {
    for (const name of signals) {
      const handler = () => resolve(name);
      handlers.push([name, handler]);
      Deno.addSignalListener(name, handler);
    }
  });
  return {
    signal,
    remove: () => {
      for (const [name, handler] of handlers) Deno.removeSignalListener(name, handler);
    },
  };
}

/**
 * SIGHUP re-reads the config, as `nginx -s reload` does (reloads run one at a time); returns
 * what stops listening for it.
 */
function reloadOnHangup(gateway: Gateway, configPath: string, logger: Logger): () => void {
  const onHangup = () => {
    logger.info("reload requested", { signal: "SIGHUP", path: configPath });
    gateway.reloadConfig().catch((error) =>
      logger.error("config reload failed", { error: String(error) })
    );
  };
  Deno.addSignalListener("SIGHUP", onHangup);
  return () => Deno.removeSignalListener("SIGHUP", onHangup);
}

async function run(configPath: string, { config, notes }: Loaded, env: Env): Promise<number> {
  const logger = createLogger();
  logger.info("config loaded", {
    path: configPath,
    version: VERSION,
    services: Object.keys(config.services),
    cgroup: notes.cgroup,
    capped: notes.capped,
  });
  // Loaded here rather than at the top so --help, --version and --check answer without
  // loading Hono and OpenTelemetry (about 0.3 s of start-up).
  const { createGateway } = await import("./app.ts");
  // Named here so an instance's workers report under it too (README, "Workers").
  const instanceId = crypto.randomUUID();
  const threads = threadsFor(config.workers, config.listen.tls !== null, notes.cgroup);
  // With workers, the main thread's health probes are the instance's, shared with the workers.
  const prober = threads.count > 1 ? createSharedProber() : null;
  const gateway = createGateway(config, {
    env,
    logger,
    instanceId,
    probeThrough: prober?.through,
    // The same reading and validation as start-up (PORT, cgroup caps), for SIGHUP and
    // POST /admin/reload.
    readConfig: () => {
      const next = loadConfig(readConfigJson(configPath), env, readCgroupLimits()).config;
      reloadCertificate();
      return next;
    },
  });
  // The certificate files are re-read with the config (listen is restart-only, so the paths
  // are the running ones; a renewed file at the same path is what cert-manager and certbot
  // write). A bad pair throws ConfigError: the reload is refused and the old one keeps serving.
  let tlsServer: TlsServer | null = null;
  const reloadCertificate = () => {
    const tls = config.listen.tls;
    if (tlsServer === null || tls === null) return;
    if (tlsServer.setCertificate(readCertificatePair(tls))) {
      logger.info("certificate reloaded", { certFile: tls.certFile, port: tlsServer.addr.port });
    }
  };

  if (prober !== null) {
    return await runWithWorkers(configPath, config, gateway, env, logger, {
      count: threads.count,
      instanceId,
      prober,
    });
  }
  // A number the config asked for is worth a warning; the default "auto" is not the user's
  // request, so it is only noted (README, "Workers").
  if (threads.singleBecauseOfTls === "asked") {
    logger.warn("workers: the TLS listener runs on the main thread alone", { workers: 1 });
  } else if (threads.singleBecauseOfTls === "auto") {
    logger.info("workers: auto runs one thread with the TLS listener", { workers: 1 });
  }

  let servers;
  try {
    servers = listen(config, gateway);
    tlsServer = servers.tls;
  } catch (error) {
    if (error instanceof ConfigError) {
      // The files changed between the check at start-up and now.
      logger.flush();
      console.error(`breakwater: invalid config ${configPath}`);
      for (const problem of error.problems) console.error(formatProblem(problem));
      await gateway.close();
      return 2;
    }
    if (!(error instanceof ListenError)) throw error;
    logger.flush();
    console.error(error.message);
    await gateway.close();
    return 1;
  }
  // Registered before `ready` so a signal during start-up drains too instead of killing.
  const shutdownSignal = nextShutdownSignal();
  const stopReloadingOnHangup = reloadOnHangup(gateway, configPath, logger);

  await gateway.ready;
  logger.info("listening", {
    hostname: (servers.public ?? servers.tls)?.addr.hostname,
    // listen.port's bound port, whichever server took it.
    port: (servers.public ?? servers.tls)?.addr.port,
    tlsPort: servers.tls?.addr.port ?? null,
    adminHostname: servers.admin.addr.hostname,
    adminPort: servers.admin.addr.port,
    degraded: gateway.breaker.degraded(),
  });

  const signal = await shutdownSignal.signal;
  stopReloadingOnHangup();
  // The shutdown settings of the config in force (a reload may have changed them).
  await shutdown(signal, gateway.config, gateway, servers, logger);
  shutdownSignal.remove();
  return 0;
}

/**
 * The instance with several workers (README, "Workers"): the main thread keeps KV, the fleet
 * breaker, the admin port and reloads; `workers/run.ts` runs the public port in the workers.
 */
async function runWithWorkers(
  configPath: string,
  config: GatewayConfig,
  gateway: Gateway,
  env: Env,
  logger: Logger,
  workers: { count: number; instanceId: string; prober: SharedProber },
): Promise<number> {
  const { runWorkers } = await import("./workers/run.ts");
  const shutdownSignal = nextShutdownSignal();
  const stopReloadingOnHangup = reloadOnHangup(gateway, configPath, logger);
  try {
    return await runWorkers({
      config,
      ...workers,
      gateway,
      env,
      logger,
      shutdownSignal: shutdownSignal.signal,
      listenAdmin: (handler) => serveOn(config, "admin", config.admin, handler),
    });
  } catch (error) {
    if (!(error instanceof ListenError)) throw error;
    logger.flush();
    console.error(error.message);
    return 1;
  } finally {
    stopReloadingOnHangup();
    shutdownSignal.remove();
  }
}

async function shutdown(
  signal: Deno.Signal,
  config: GatewayConfig,
  gateway: Gateway,
  servers: Servers,
  logger: Logger,
): Promise<void> {
  logger.info("shutdown started", { signal, inFlight: gateway.inFlight() });
  // A hard bound on the whole shutdown: whatever hangs (a KV call, an exporter), the process
  // exits soon after shutdown.timeoutMs, as an orchestrator's grace period expects.
  const hardStop = setTimeout(() => {
    logger.error("shutdown did not finish in time; exiting", { inFlight: gateway.inFlight() });
    logger.flush();
    Deno.exit(1);
  }, config.shutdown.drainDelayMs + config.shutdown.timeoutMs + 5000);
  Deno.unrefTimer(hardStop);
  gateway.drain();
  const deadlineAt = Date.now() + config.shutdown.timeoutMs;
  if (config.shutdown.drainDelayMs > 0) {
    // Time for load balancers to see /readyz fail before the listener goes away.
    await delay(config.shutdown.drainDelayMs);
  }
  const remainingMs = Math.max(0, deadlineAt - Date.now());
  const publicShutdown = Promise.all([
    servers.public?.shutdown(),
    servers.tls?.shutdown(),
    // A WebSocket session's end (its access-log line) is recorded after its connection left
    // the server.
    gateway.websocketsClosed(),
  ]);
  const finished = await deadline(publicShutdown, remainingMs).then(
    () => true,
    (error) => {
      if (error instanceof DeadlineError) return false;
      throw error;
    },
  );
  if (!finished) {
    logger.warn("shutdown timeout passed with requests in flight", {
      inFlight: gateway.inFlight(),
    });
  }
  await gateway.close();
  await servers.admin.shutdown();
  clearTimeout(hardStop);
  logger.info("shutdown complete", { clean: finished });
  logger.flush();
}

if (import.meta.main) {
  // Deno.exit: timers and sockets of a drained gateway must not keep the process alive.
  Deno.exit(await main(Deno.args));
}
