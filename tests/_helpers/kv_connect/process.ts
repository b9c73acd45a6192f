/**
 * Runs the KV Connect test server (`main.ts`) as a child process: what a test kills with
 * SIGKILL and starts again on the same port and file to play "the KV host restarted".
 *
 * @module
 */

/** A running server process. */
export interface KvConnectProcess {
  /** `http://127.0.0.1:PORT`. */
  url: string;
  /** The port (pass it to the next start to restart "the same host"). */
  port: number;
  /** The child. */
  child: Deno.ChildProcess;
  /** Everything it wrote to stderr so far (one line per refused request). */
  stderr(): string;
  /** Sends `signal` (default SIGTERM: clean close) and waits for the exit. Idempotent. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
}

/** Options of {@link spawnKvConnectServer}. */
export interface SpawnKvConnectOptions {
  /** The KV file (its folder must exist). */
  path: string;
  /** The access token clients must present. */
  accessToken: string;
  /** Default 0. */
  port?: number;
  /** Watch keep-alive interval. Default the server's (5000). */
  watchPingIntervalMs?: number;
  /** How long to wait for it to listen. Default 15000. */
  timeoutMs?: number;
}

const MAIN = new URL("./main.ts", import.meta.url).pathname;
const DENO_JSON = new URL("../../../deno.json", import.meta.url).pathname;

/**
 * Starts the server in a child process and resolves once it listens. A port still held (a
 * restart racing the old process) is retried until `timeoutMs`.
 *
 * @example
 * ```ts
 * const first = await spawnKvConnectServer({ path, accessToken: "s3cret-token" });
 * await first.stop("SIGKILL");
 * const again = await spawnKvConnectServer({ path, accessToken: "s3cret-token", port: first.port });
 * ```
 */
export async function spawnKvConnectServer(
  options: SpawnKvConnectOptions,
): Promise<KvConnectProcess> {
  const deadline = Date.now() + (options.timeoutMs ?? 15_000);
  let lastError = "";
  while (Date.now() < deadline) {
    const started = await spawnOnce(options, deadline);
    if ("url" in started) return started;
    lastError = started.error;
    // Only a busy port is worth another try; anything else will not get better.
    if (!/AddrInUse|address already in use/i.test(lastError)) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`KV Connect server did not start: ${lastError}`);
}

async function spawnOnce(
  options: SpawnKvConnectOptions,
  deadline: number,
): Promise<KvConnectProcess | { error: string }> {
  const folder = options.path.slice(0, options.path.lastIndexOf("/")) || "/";
  const args = [
    "run",
    `--config=${DENO_JSON}`,
    "--quiet",
    "--allow-net=127.0.0.1",
    `--allow-read=${folder}`,
    `--allow-write=${folder}`,
    MAIN,
    "--path",
    options.path,
    "--token",
    options.accessToken,
    "--port",
    String(options.port ?? 0),
  ];
  if (options.watchPingIntervalMs !== undefined) {
    args.push("--ping-ms", String(options.watchPingIntervalMs));
  }
  const child = new Deno.Command(Deno.execPath(), {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let stderrText = "";
  const stderrDone = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      stderrText += chunk;
    }
  })();
  let onListening: (line: { url: string; port: number }) => void = () => {};
  const listening = new Promise<{ url: string; port: number }>((resolve) => onListening = resolve);
  const stdoutDone = (async () => {
    let buffered = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      buffered += chunk;
      let newline;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        try {
          const parsed = JSON.parse(line);
          if (parsed.msg === "listening") onListening(parsed);
        } catch {
          // not ours
        }
      }
    }
  })();
  let status: Deno.CommandStatus | null = null;
  const exited = child.status.then((value) => status = value);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const result = await Promise.race([
    listening,
    exited.then(() => null),
    new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), deadline - Date.now())),
  ]);
  clearTimeout(timer);
  let stopping: Promise<Deno.CommandStatus> | null = null;
  const stop = (signal: Deno.Signal = "SIGTERM") => {
    stopping ??= (async () => {
      if (status === null) {
        try {
          child.kill(signal);
        } catch {
          // already exited
        }
      }
      const final = await child.status;
      await Promise.all([stdoutDone, stderrDone]);
      return final;
    })();
    return stopping;
  };
  if (result === null) {
    await stop("SIGKILL");
    return { error: stderrText || "timed out" };
  }
  return { url: result.url, port: result.port, child, stderr: () => stderrText, stop };
}
