/**
 * Runs `deno` as a child process for the CLI and launcher tests: bounded by a deadline (the
 * child is killed, the test fails), with stdout read line by line for long-running gateways.
 *
 * @module
 */

/** The project folder. */
export const ROOT = decodeURIComponent(new URL("../../", import.meta.url).pathname).replace(
  /\/$/,
  "",
);
/** The gateway's entry point. */
export const MAIN = `${ROOT}/src/main.ts`;
/** The launcher behind `deno task start`. */
export const LAUNCHER = `${ROOT}/src/launch.ts`;
/** The project's Deno config (imports, `unstable: ["kv"]`). */
export const DENO_JSON = `${ROOT}/deno.json`;

/** What a finished child printed and how it exited. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `deno <args>` to completion; kills it and throws after `timeoutMs`. */
export async function runDeno(
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<RunResult> {
  const controller = new AbortController();
  const timeoutMs = options.timeoutMs ?? 20_000;
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const output = await new Deno.Command(Deno.execPath(), {
      args,
      cwd: options.cwd ?? ROOT,
      env: options.env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: controller.signal,
    }).output();
    if (controller.signal.aborted) {
      throw new Error(`deno ${args.join(" ")}: no exit in ${timeoutMs} ms`);
    }
    return {
      code: output.code,
      stdout: new TextDecoder().decode(output.stdout),
      stderr: new TextDecoder().decode(output.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** A long-running child whose stdout is collected as lines. */
export interface RunningDeno {
  child: Deno.ChildProcess;
  /** Stdout lines so far. */
  lines: string[];
  /** Stderr so far. */
  stderr(): string;
  /** Resolves with the first stdout line `predicate` accepts; throws after `timeoutMs`. */
  waitForLine(predicate: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  /** Sends `signal` (default SIGTERM), waits for the exit (SIGKILL after `timeoutMs`). */
  stop(signal?: Deno.Signal, timeoutMs?: number): Promise<Deno.CommandStatus>;
}

/** Spawns `deno <args>` with stdout and stderr piped and read in the background. */
export function spawnDeno(
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): RunningDeno {
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd: options.cwd ?? ROOT,
    env: options.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const waiters = new Set<() => void>();
  let stderrText = "";
  const stdoutDone = (async () => {
    let buffered = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      buffered += chunk;
      let newline;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        lines.push(buffered.slice(0, newline));
        buffered = buffered.slice(newline + 1);
      }
      for (const wake of waiters) wake();
    }
    for (const wake of waiters) wake();
  })();
  const stderrDone = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      stderrText += chunk;
    }
  })();
  let exited = false;
  const status = child.status.then((value) => {
    exited = true;
    for (const wake of waiters) wake();
    return value;
  });

  return {
    child,
    lines,
    stderr: () => stderrText,
    async waitForLine(predicate, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      while (true) {
        const found = lines.find(predicate);
        if (found !== undefined) return found;
        if (exited) {
          throw new Error(`exited before the line came:\n${lines.join("\n")}\n${stderrText}`);
        }
        const remainingMs = deadline - Date.now();
        if (remainingMs <= 0) {
          throw new Error(`no such line in ${timeoutMs} ms:\n${lines.join("\n")}\n${stderrText}`);
        }
        let timer: ReturnType<typeof setTimeout> | undefined;
        let wake: () => void = () => {};
        await new Promise<void>((resolve) => {
          wake = resolve;
          waiters.add(wake);
          timer = setTimeout(resolve, remainingMs);
        });
        waiters.delete(wake);
        clearTimeout(timer);
      }
    },
    async stop(signal = "SIGTERM", timeoutMs = 20_000) {
      if (!exited) {
        try {
          child.kill(signal);
        } catch {
          // exited meanwhile
        }
      }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch {
          // exited meanwhile
        }
      }, timeoutMs);
      const result = await status;
      clearTimeout(timer);
      // A launcher killed hard leaves its gateway child holding the pipes: never wait on them
      // for long, or a test would hang instead of failing.
      let pipesTimer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.all([stdoutDone, stderrDone]),
        new Promise((resolve) => pipesTimer = setTimeout(resolve, 2000)),
      ]);
      clearTimeout(pipesTimer);
      return result;
    },
  };
}

/** A temp folder outside the project with a config file; removed by `cleanup()`. */
export async function tempConfig(
  build: (dir: string) => Record<string, unknown>,
): Promise<{ dir: string; configPath: string; cleanup(): Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "breakwater-cli-" });
  const configPath = `${dir}/gateway.json`;
  await Deno.writeTextFile(configPath, JSON.stringify(build(dir), null, 2));
  return { dir, configPath, cleanup: () => Deno.remove(dir, { recursive: true }) };
}

/** A small valid config on loopback ports chosen by the OS, with its KV file in `kvPath`. */
export function smallConfig(kvPath: string, listenPort = 0): Record<string, unknown> {
  return {
    listen: { hostname: "127.0.0.1", port: listenPort },
    admin: { hostname: "127.0.0.1", port: 0 },
    kv: { path: kvPath },
    services: {
      catalog: { prefix: "/api/catalog", upstreams: ["http://127.0.0.1:9"] },
      orders: { prefix: "/api/orders", upstreams: ["http://127.0.0.1:9"] },
    },
  };
}

/** The `deno run` flags of a task in deno.json (`deno task start` minus `deno run` and the script). */
export function taskFlags(task: string): string[] {
  const config = JSON.parse(Deno.readTextFileSync(DENO_JSON));
  const words: string[] = config.tasks[task].split(/\s+/);
  if (words[0] !== "deno" || words[1] !== "run") throw new Error(`task ${task} is not deno run`);
  return words.slice(2).filter((word) => word.startsWith("--"));
}
