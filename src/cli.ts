/**
 * The gateway's command line: which flags it takes, the usage text, the version, and how a
 * missing permission is explained. Pure functions, so `src/main.ts` and the launcher
 * (`src/launch.ts`) parse arguments the same way.
 *
 * @module
 */
import { VERSION } from "./version.ts";

export { VERSION };

/** Where the config is read from when neither `--config` nor `BREAKWATER_CONFIG` says. */
export const DEFAULT_CONFIG_PATH = "./breakwater.json";

/** What the command line asks for. */
export type CliCommand =
  /** Run the gateway (`check: false`) or only validate its config (`check: true`). */
  | { kind: "run"; check: boolean; configFlag: string | null }
  /** Print the usage text and exit 0. */
  | { kind: "help" }
  /** Print the version and exit 0. */
  | { kind: "version" };

/** A command line the gateway does not understand; the process exits 2 with the usage. */
export class UsageError extends Error {
  /** @param message what is wrong, e.g. `unknown flag --conifg (did you mean --config?)` */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

const FLAGS = ["--config", "--check", "--help", "--version"] as const;

/** Levenshtein distance, for "did you mean" on a mistyped flag (`--conifg`). */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(
        previous[j] + 1,
        current[j - 1] + 1,
        previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    previous = current;
  }
  return previous[b.length];
}

function unknownFlag(arg: string): UsageError {
  const name = arg.split("=")[0];
  const near = FLAGS.find((flag) => editDistance(name, flag) <= 2);
  return new UsageError(`unknown flag ${name}${near ? ` (did you mean ${near}?)` : ""}`);
}

/**
 * Parses the gateway's arguments. `--help` and `--version` win over everything after them;
 * a lone `--` is skipped because `deno task start -- --check` passes it through.
 *
 * @throws {UsageError} for an unknown flag, a missing or repeated `--config`, or a positional
 *   argument
 * @example
 * ```ts
 * parseArgs(["--config", "/etc/breakwater/gw.json", "--check"]);
 * // { kind: "run", check: true, configFlag: "/etc/breakwater/gw.json" }
 * ```
 */
export function parseArgs(args: readonly string[]): CliCommand {
  let check = false;
  let configFlag: string | null = null;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") continue;
    if (arg === "--help" || arg === "-h") return { kind: "help" };
    if (arg === "--version" || arg === "-V") return { kind: "version" };
    if (arg === "--check") {
      check = true;
      continue;
    }
    if (arg === "--config" || arg.startsWith("--config=")) {
      const inline = arg.startsWith("--config=");
      const value = inline ? arg.slice("--config=".length) : args[i + 1];
      // A value that looks like a flag is a forgotten path (`--config --check`), not a file.
      if (value === undefined || value === "" || (!inline && value.startsWith("-"))) {
        throw new UsageError("--config needs a path (--config PATH or --config=PATH)");
      }
      if (configFlag !== null) throw new UsageError("--config given more than once");
      configFlag = value;
      if (!inline) i++;
      continue;
    }
    if (arg.startsWith("-")) throw unknownFlag(arg);
    throw new UsageError(`unexpected argument ${JSON.stringify(arg)}`);
  }
  return { kind: "run", check, configFlag };
}

/**
 * The config path: `--config`, else `BREAKWATER_CONFIG`, else `./breakwater.json` (README,
 * "Configuration"). The launcher resolves it the same way to grant read access to it.
 */
export function configPathFor(
  configFlag: string | null,
  env: Record<string, string | undefined>,
): string {
  return configFlag ?? (env.BREAKWATER_CONFIG || DEFAULT_CONFIG_PATH);
}

/** The `--help` text: every flag, environment variable, exit code and signal. */
export const USAGE =
  `breakwater ${VERSION}: a resilient edge gateway with a circuit breaker shared by the fleet

Usage:
  deno task start [--config PATH] [--check]     (derives the narrowest permissions from the config)
  deno run <permissions> src/main.ts [--config PATH] [--check]
  deno task start --help | --version

Options:
  --config PATH, --config=PATH
                 the JSON config file (default: $BREAKWATER_CONFIG, else ${DEFAULT_CONFIG_PATH})
  --check        load and validate the config as start-up does, print a one-line summary and
                 exit; never listens
  -h, --help     print this text
  -V, --version  print the version

Environment:
  PORT                       overrides listen.port
  BREAKWATER_CONFIG          the config path when --config is not given
  BREAKWATER_LOG_LEVEL       debug, info (default: one JSON access-log line per request), warn,
                             error or off
  BREAKWATER_ADMIN_TOKEN     enables the admin write routes (Authorization: Bearer TOKEN)
  DENO_KV_ACCESS_TOKEN       token for a KV Connect server (kv.path "http(s)://...")
  OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
                             the resource of every metric and span
  OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS,
  OTEL_EXPORTER_OTLP_METRICS_HEADERS, OTEL_EXPORTER_OTLP_TRACES_HEADERS,
  OTEL_EXPORTER_OTLP_TIMEOUT, OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
  OTEL_EXPORTER_OTLP_TRACES_TIMEOUT, OTEL_EXPORTER_OTLP_PROTOCOL,
  OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
  OTEL_EXPORTER_OTLP_COMPRESSION, OTEL_EXPORTER_OTLP_CERTIFICATE
                             OTLP/HTTP export (http/protobuf by default, or http/json)
  OTEL_METRICS_EXPORTER, OTEL_TRACES_EXPORTER
                             otlp or none
  OTEL_METRIC_EXPORT_INTERVAL, OTEL_METRIC_EXPORT_TIMEOUT
                             metrics export period and bound (ms)
  OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG
                             sampling (default parentbased_always_on)
  OTEL_BSP_SCHEDULE_DELAY, OTEL_BSP_EXPORT_TIMEOUT, OTEL_BSP_MAX_QUEUE_SIZE,
  OTEL_BSP_MAX_EXPORT_BATCH_SIZE
                             span batching
  OTEL_DENO                  Deno's built-in OpenTelemetry; the gateway keeps its own
                             providers and sends exactly one traceparent upstream either way
  BREAKWATER_TEST_HOOKS      tests only: "1" adds POST /admin/test/crash-worker/{n} (workers);
                             never set it in production

Permissions (never -A): --allow-net, --allow-env, --allow-sys,
  --allow-read=<config>,<kv dir>,/sys/fs/cgroup,/proc/self and --allow-write=<kv dir>
  (no kv dir for ":memory:", a KV Connect URL or null). \`deno task start\` grants exactly these.

Signals: SIGTERM and SIGINT drain (shutdown.drainDelayMs, then up to
  shutdown.timeoutMs for requests in flight) and exit 0. SIGHUP re-reads the config and
  applies a valid one live (listen, workers, admin, kv and telemetry need a restart).

Exit codes: 0 clean shutdown, --help, --version or a valid --check; 1 start-up failure (a port
  in use, a missing permission); 2 an invalid config or command line.
`;

/** True for the errors Deno raises when a permission is missing or the OS refuses access. */
export function isPermissionError(error: unknown): boolean {
  return error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied;
}

/**
 * One line for a path Deno's sandbox refused (a missing `--allow-read`/`--allow-write`): which
 * access, to what, and how to grant it.
 *
 * @param accesses the kinds of access needed, e.g. `["read"]` or `["read", "write"]`
 * @param path the path to grant
 * @param what what the path is for, e.g. `the config`
 */
export function explainMissingPermission(
  accesses: readonly ("read" | "write")[],
  path: string,
  what: string,
): string {
  const flags = accesses.map((access) => `--allow-${access}=${path}`).join(" ");
  return `breakwater: Deno was not granted ${accesses.join(" and ")} access to ${what} ` +
    `(${path}); start with \`deno task start --config <file>\`, which grants exactly what ` +
    `the config needs, or add ${flags} to \`deno run\``;
}

/**
 * Explains a permission error in one line. `NotCapable` is Deno's sandbox (a missing
 * `--allow-*` flag); `PermissionDenied` is the operating system's file mode or owner, which no
 * Deno flag changes.
 *
 * @param error the error thrown by the file operation
 * @param access `read` or `write`
 * @param path the path that was refused
 * @param what what the path is for, e.g. `the config`
 */
export function explainPermissionError(
  error: unknown,
  access: "read" | "write",
  path: string,
  what: string,
): string {
  if (error instanceof Deno.errors.PermissionDenied) {
    return `breakwater: the operating system refused ${access} access to ${what} (${path}): ` +
      `${(error as Error).message}; make it ${access === "read" ? "readable" : "writable"} ` +
      "by the user that runs the gateway";
  }
  return explainMissingPermission([access], path, what);
}
