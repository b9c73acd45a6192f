/**
 * Gateways for tests: in-process (`createGateway` + `Deno.serve` on port 0) for the request
 * path, and real `deno run src/main.ts` processes where behaviour crosses processes (signals,
 * exit codes, several instances sharing one KV file).
 *
 * @module
 */
import { createGateway, type Gateway } from "../../src/app.ts";
import { deadline, DeadlineError } from "../../src/async/deadline.ts";
import { parseConfig } from "../../src/config/schema.ts";
import { createLogger } from "../../src/telemetry/mod.ts";
import { serveHttp1 } from "../../src/server/http1_server.ts";

/**
 * An in-process gateway listening on loopback. Disposable: `await using gw = await
 * startTestGateway(config)` closes it at the end of the block, however the block ends.
 */
export interface TestGateway extends AsyncDisposable {
  /** The gateway. */
  gateway: Gateway;
  /** `http://127.0.0.1:PORT` of the public app. */
  url: string;
  /** `http://127.0.0.1:PORT` of the admin app. */
  adminUrl: string;
  /** Port of the public app. */
  port: number;
  /** Log lines written (JSON, parsed). */
  logs: Record<string, unknown>[];
  /** Closes servers and the gateway; idempotent. */
  close(): Promise<void>;
}

/** Starts a gateway in this process from a raw config object (validated here). */
export async function startTestGateway(
  rawConfig: Record<string, unknown>,
  env: Record<string, string | undefined> = {},
): Promise<TestGateway> {
  const config = parseConfig({ kv: { path: ":memory:" }, ...rawConfig });
  const logs: Record<string, unknown>[] = [];
  const logger = createLogger({
    level: "debug",
    write: (line) => logs.push(JSON.parse(line)),
  });
  const gateway = createGateway(config, { env, logger, instanceId: crypto.randomUUID() });
  await gateway.ready;
  // The public port on the gateway's own server, as src/main.ts runs it.
  const server = serveHttp1({
    hostname: "127.0.0.1",
    port: 0,
    headerTimeoutMs: config.limits.headerTimeoutMs,
    idleTimeoutMs: config.limits.idleTimeoutMs,
    bodyIdleTimeoutMs: config.limits.bodyIdleTimeoutMs,
    maxConnections: config.limits.maxClientConnections,
  }, gateway.app.fetch);
  const admin = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    gateway.adminApp.fetch,
  );
  let closing: Promise<void> | null = null;
  const close = () =>
    closing ??= (async () => {
      await server.shutdown();
      await admin.shutdown();
      await gateway.close();
    })();
  return {
    gateway,
    url: `http://127.0.0.1:${server.addr.port}`,
    adminUrl: `http://127.0.0.1:${admin.addr.port}`,
    port: server.addr.port,
    logs,
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** A gateway running as its own `deno run src/main.ts` process. */
export interface GatewayProcess {
  /** `http://127.0.0.1:PORT` of the public port. */
  url: string;
  /** `http://127.0.0.1:PORT` of the admin port. */
  adminUrl: string;
  /** The child process. */
  child: Deno.ChildProcess;
  /** Every stdout line so far, parsed where JSON. */
  lines: Record<string, unknown>[];
  /** Everything written to stderr so far. */
  stderr(): string;
  /** Sends a signal and waits for the exit status. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
}

const MAIN = new URL("../../src/main.ts", import.meta.url).pathname;
const DENO_JSON = new URL("../../deno.json", import.meta.url).pathname;

/** Writes `config` to a temp file and runs the gateway on it; resolves once it listens. */
export async function startGatewayProcess(
  config: Record<string, unknown>,
  options: {
    env?: Record<string, string>;
    timeoutMs?: number;
    /** A KV file shared with other instances (its folder becomes writable too). */
    sharedKvPath?: string;
  } = {},
): Promise<GatewayProcess> {
  const dir = await Deno.makeTempDir({ prefix: "breakwater-test-" });
  const configPath = `${dir}/breakwater.json`;
  await Deno.writeTextFile(
    configPath,
    JSON.stringify({
      listen: { hostname: "127.0.0.1", port: 0 },
      admin: { hostname: "127.0.0.1", port: 0 },
      kv: { path: options.sharedKvPath ?? `${dir}/breakwater.kv` },
      ...config,
    }),
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      `--config=${DENO_JSON}`,
      "--allow-net",
      "--allow-env",
      "--allow-sys",
      `--allow-read`,
      `--allow-write=${dir}${
        options.sharedKvPath
          ? "," + options.sharedKvPath.slice(0, options.sharedKvPath.lastIndexOf("/"))
          : ""
      }`,
      MAIN,
      "--config",
      configPath,
    ],
    env: { BREAKWATER_LOG_LEVEL: "info", ...options.env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();

  const lines: Record<string, unknown>[] = [];
  let stderrText = "";
  const stderrDone = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      stderrText += chunk;
    }
  })();
  let onListening: (line: Record<string, unknown>) => void = () => {};
  const listening = new Promise<Record<string, unknown>>((resolve) => onListening = resolve);
  const stdoutDone = (async () => {
    let buffered = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      buffered += chunk;
      let newline;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const text = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        let line: Record<string, unknown>;
        try {
          line = JSON.parse(text);
        } catch {
          line = { text };
        }
        lines.push(line);
        if (line.msg === "listening") onListening(line);
      }
    }
  })();

  const started = await deadline(
    Promise.race([listening, child.status.then(() => null)]),
    options.timeoutMs ?? 20_000,
  ).catch((error) => {
    if (error instanceof DeadlineError) return null;
    throw error;
  });
  const stop = async (signal: Deno.Signal = "SIGTERM") => {
    try {
      child.kill(signal);
    } catch {
      // already exited
    }
    const status = await child.status;
    await Promise.all([stdoutDone, stderrDone]);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    return status;
  };
  if (started === null) {
    await stop("SIGKILL");
    throw new Error(`gateway did not start:\n${stderrText}\n${JSON.stringify(lines)}`);
  }
  return {
    url: `http://127.0.0.1:${started.port}`,
    adminUrl: `http://127.0.0.1:${started.adminPort}`,
    child,
    lines,
    stderr: () => stderrText,
    stop,
  };
}

/** Runs the gateway on a config and waits for it to exit (for start-up failures). */
export async function runGatewayExpectingExit(
  configText: string,
): Promise<{ code: number; stderr: string; stdout: string }> {
  const dir = await Deno.makeTempDir({ prefix: "breakwater-test-" });
  const configPath = `${dir}/breakwater.json`;
  await Deno.writeTextFile(configPath, configText);
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      `--config=${DENO_JSON}`,
      "--allow-net",
      "--allow-env",
      "--allow-sys",
      "--allow-read",
      `--allow-write=${dir}`,
      MAIN,
      "--config",
      configPath,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  await Deno.remove(dir, { recursive: true });
  return {
    code: output.code,
    stderr: new TextDecoder().decode(output.stderr),
    stdout: new TextDecoder().decode(output.stdout),
  };
}

/** Which upstream client a test gateway's services use. */
export type UpstreamClientChoice = "fetch" | "http1";

/** `config` with every service on `client` (through `defaults`, so services can still override). */
export function withUpstreamClient(
  config: Record<string, unknown>,
  client: UpstreamClientChoice,
): Record<string, unknown> {
  const defaults = (config.defaults ?? {}) as Record<string, unknown>;
  return { ...config, defaults: { ...defaults, upstreamClient: client } };
}
