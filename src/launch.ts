/**
 * `deno task start`: runs the gateway with the narrowest permissions its config allows, wherever
 * the config and the KV file live.
 *
 * Deno's permissions are fixed when a process starts, and which paths the gateway needs depends
 * on the config it has not read yet. This launcher reads the config (same path resolution as
 * the gateway: `--config`, `BREAKWATER_CONFIG`, `./breakwater.json`), derives
 * `--allow-read=<config>,<kv folder>,<tls files>,<src/ and deno.json when workers may run>,
 * /sys/fs/cgroup,/proc/self` and `--allow-write=<kv folder>`, and runs
 * `deno run --allow-net --allow-env --allow-sys <those> src/main.ts <args>` with stdio
 * inherited. It forwards SIGTERM, SIGINT and SIGHUP to the gateway and exits with its code.
 *
 * The launcher itself needs `--allow-read` (the config can be anywhere),
 * `--allow-env=BREAKWATER_CONFIG` and `--allow-run` (for `Deno.execPath()`, whose path depends on
 * how Deno was installed). It never passes `-A`. The KV folder is not created here: the gateway
 * creates it on first open, which `--allow-write=<kv folder>` permits, so the launcher needs no
 * write access at all.
 *
 * @module
 */
import { configPathFor, parseArgs } from "./cli.ts";
import { type GatewayConfig, parseConfig } from "./config/schema.ts";
import { GATEWAY_V8_FLAGS } from "./runtime_flags.ts";

/** The file-system access the gateway gets, as absolute paths. */
export interface PathPermissions {
  /** Paths for `--allow-read`. */
  read: string[];
  /** Paths for `--allow-write`; empty when nothing is written. */
  write: string[];
}

/**
 * Read whatever the config says: cgroup v2 `cpu.max`/`memory.max` (README, "Container
 * awareness") and the process's own `/proc` entry for resource metrics.
 */
export const SYSTEM_READ_PATHS: readonly string[] = ["/sys/fs/cgroup", "/proc/self"];

/** Network, environment and system information: the gateway needs all three whatever the config. */
export const FIXED_PERMISSION_FLAGS: readonly string[] = [
  "--allow-net",
  "--allow-env",
  "--allow-sys",
];

/**
 * `path` made absolute against `cwd`, with `.` and `..` segments resolved (lexically, like the
 * gateway's relative paths, which the OS resolves against the same working directory).
 */
export function resolvePath(cwd: string, path: string): string {
  const joined = path.startsWith("/") ? path : `${cwd}/${path}`;
  const segments: string[] = [];
  for (const segment of joined.split("/")) {
    if (segment === "" || segment === ".") continue;
    if (segment === "..") segments.pop();
    else segments.push(segment);
  }
  return "/" + segments.join("/");
}

/**
 * The folder that holds a KV file, or null when `kv.path` names no local file: `:memory:`, a KV
 * Connect URL, or null (`Deno.openKv()`'s own storage, which needs no path permission).
 */
export function kvFolderOf(kvPath: string | null, cwd: string): string | null {
  if (kvPath === null || kvPath === ":memory:" || /^https?:\/\//i.test(kvPath)) return null;
  const file = resolvePath(cwd, kvPath);
  return file.slice(0, file.lastIndexOf("/")) || "/";
}

/**
 * The paths the gateway must read and write for a config at `configPath` whose `kv.path` is
 * `kvPath` (`undefined` when the config could not be read or validated: the gateway then stops
 * with that problem before it opens KV, so only the config itself is granted), plus
 * `filesRead`: other files the config names (the services' `tls` files), read at start and at
 * every reload.
 *
 * @example
 * ```ts
 * permissionsFor("/etc/breakwater/gw.json", "/var/lib/breakwater/bw.kv", "/srv");
 * // { read: ["/etc/breakwater/gw.json", "/var/lib/breakwater", "/sys/fs/cgroup", "/proc/self"],
 * //   write: ["/var/lib/breakwater"] }
 * ```
 */
export function permissionsFor(
  configPath: string,
  kvPath: string | null | undefined,
  cwd: string,
  filesRead: readonly string[] = [],
): PathPermissions {
  const kvFolder = kvPath === undefined ? null : kvFolderOf(kvPath, cwd);
  const files = [...new Set(filesRead.map((path) => resolvePath(cwd, path)))];
  return {
    read: [
      resolvePath(cwd, configPath),
      ...(kvFolder ? [kvFolder] : []),
      ...files,
      ...SYSTEM_READ_PATHS,
    ],
    write: kvFolder ? [kvFolder] : [],
  };
}

/**
 * The `--allow-*` flags for `permissions`, fixed ones first.
 *
 * @throws {Error} for a path with a comma, which Deno's flag syntax cannot express
 */
export function permissionFlags(permissions: PathPermissions): string[] {
  for (const path of [...permissions.read, ...permissions.write]) {
    if (path.includes(",")) {
      throw new Error(`cannot grant access to ${path}: Deno's --allow-* flags split on commas`);
    }
  }
  const flags = [...FIXED_PERMISSION_FLAGS, `--allow-read=${permissions.read.join(",")}`];
  if (permissions.write.length > 0) flags.push(`--allow-write=${permissions.write.join(",")}`);
  return flags;
}

/**
 * The config at `configPath`, read and validated once for everything the launcher derives from
 * it, or undefined when the file cannot be read or is not a valid config (the gateway reports
 * that itself, with its usual exit code and message naming the field).
 */
export function readLaunchConfig(configPath: string): GatewayConfig | undefined {
  try {
    return parseConfig(JSON.parse(Deno.readTextFileSync(configPath)));
  } catch {
    return undefined;
  }
}

/**
 * `kv.path` as the gateway will see it, or undefined when the file cannot be read or is not a
 * valid config (the gateway reports that itself, with its usual exit code).
 */
export function kvPathFromConfigFile(configPath: string): string | null | undefined {
  return readLaunchConfig(configPath)?.kv.path;
}

/**
 * The files of every service's `tls` block (README, "Upstream TLS"), or none without a valid
 * config. A file added by a later reload was not granted: that reload is refused naming the
 * file and the flag, and a restart grants it.
 */
export function upstreamTlsFilesOf(config: GatewayConfig | undefined): string[] {
  if (config === undefined) return [];
  return Object.values(config.services).flatMap((service) =>
    service.tls === null
      ? []
      : [service.tls.caFile, service.tls.certFile, service.tls.keyFile].filter(
        (path): path is string => path !== null,
      )
  );
}

/** {@link upstreamTlsFilesOf} the config at `configPath`. */
export function upstreamTlsFilesFromConfigFile(configPath: string): string[] {
  return upstreamTlsFilesOf(readLaunchConfig(configPath));
}

/**
 * The certificate and key of `listen.tls` (README, "TLS and HTTP/2"), re-read at every reload,
 * or none when the config has no TLS listener or is not a valid config.
 */
export function listenTlsFilesOf(config: GatewayConfig | undefined): string[] {
  const tls = config?.listen.tls ?? null;
  return tls === null ? [] : [tls.certFile, tls.keyFile];
}

/** {@link listenTlsFilesOf} the config at `configPath`. */
export function listenTlsFilesFromConfigFile(configPath: string): string[] {
  return listenTlsFilesOf(readLaunchConfig(configPath));
}

/**
 * The gateway's own code under `projectRoot`, read only: its `src/` folder and `deno.json`.
 * Deno checks read access for the modules a worker loads, unlike the main module's graph
 * (README, "Workers"); the image grants the same under `/app`.
 *
 * @example
 * ```ts
 * workerCodePaths("/app"); // ["/app/src", "/app/deno.json"]
 * ```
 */
export function workerCodePaths(projectRoot: string): string[] {
  const root = projectRoot.replace(/\/$/, "");
  return [`${root}/src`, `${root}/deno.json`];
}

/**
 * Whether a config may run more than one worker: `workers` is `"auto"` (the default) or above
 * 1, and no `listen.tls` (a TLS listener keeps the gateway on one thread). `"auto"` on a
 * one-core host still counts: the launcher does not guess the thread count, and granting read
 * of the gateway's own code costs nothing.
 */
export function mayRunWorkers(config: { workers: "auto" | number; listen: { tls: unknown } }) {
  return config.workers !== 1 && config.listen.tls === null;
}

/**
 * {@link workerCodePaths} of this project when `config` may run workers ({@link mayRunWorkers});
 * none for `"workers": 1`, a TLS listener or no valid config.
 */
export function workerCodeFor(config: GatewayConfig | undefined): string[] {
  if (config === undefined || !mayRunWorkers(config)) return [];
  return workerCodePaths(decodeURIComponent(new URL("..", import.meta.url).pathname));
}

/** {@link workerCodeFor} the config at `configPath`. */
export function workerCodeFromConfigFile(configPath: string): string[] {
  return workerCodeFor(readLaunchConfig(configPath));
}

/**
 * Everything the gateway must be granted for `config` (undefined: not readable or not valid),
 * read from the one parse: {@link permissionsFor} with the TLS files and the worker code.
 */
export function launchPermissions(
  configPath: string,
  config: GatewayConfig | undefined,
  cwd: string,
): PathPermissions {
  return permissionsFor(configPath, config?.kv.path, cwd, [
    ...listenTlsFilesOf(config),
    ...upstreamTlsFilesOf(config),
    ...workerCodeFor(config),
  ]);
}

/**
 * The arguments after `deno` that run the gateway: `run`, the V8 flags it runs with
 * (src/runtime_flags.ts), permissions, main module, `args`.
 */
export function gatewayArgs(
  options: { denoConfigPath: string; mainModule: string; flags: string[]; args: string[] },
): string[] {
  return [
    "run",
    `--config=${options.denoConfigPath}`,
    // A prompt would stall start-up on a terminal; a missing permission must fail instead.
    "--no-prompt",
    ...GATEWAY_V8_FLAGS,
    ...options.flags,
    options.mainModule,
    ...options.args,
  ];
}

/** Signals a supervisor sends to stop (the gateway drains) or hang up (it reloads its config). */
const FORWARDED_SIGNALS = ["SIGTERM", "SIGINT", "SIGHUP"] as const;

async function launch(args: string[]): Promise<number> {
  let configFlag: string | null = null;
  try {
    const command = parseArgs(args);
    if (command.kind === "run") configFlag = command.configFlag;
  } catch {
    // A bad command line: the gateway prints the usage and exits 2.
  }
  const configPath = configPathFor(configFlag, {
    BREAKWATER_CONFIG: Deno.env.get("BREAKWATER_CONFIG"),
  });
  let flags: string[];
  try {
    // One read and one validation of the file for every path derived from it.
    flags = permissionFlags(
      launchPermissions(configPath, readLaunchConfig(configPath), Deno.cwd()),
    );
  } catch (error) {
    console.error(`breakwater: ${(error as Error).message}`);
    return 1;
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: gatewayArgs({
      denoConfigPath: decodeURIComponent(new URL("../deno.json", import.meta.url).pathname),
      mainModule: new URL("./main.ts", import.meta.url).href,
      flags,
      args,
    }),
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();

  const forwarders = FORWARDED_SIGNALS.map((signal) => {
    const forward = () => {
      try {
        child.kill(signal);
      } catch {
        // Already exited: its status is on the way.
      }
    };
    Deno.addSignalListener(signal, forward);
    return () => Deno.removeSignalListener(signal, forward);
  });
  const status = await child.status;
  for (const remove of forwarders) remove();
  return status.code;
}

if (import.meta.main) {
  Deno.exit(await launch(Deno.args));
}
