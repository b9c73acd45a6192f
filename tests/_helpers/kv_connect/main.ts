/**
 * The KV Connect test server as its own process, so a test can kill it (SIGKILL) and start it
 * again on the same port and file, as an operator would restart `denokv` on another host:
 *
 * ```sh
 * deno run --allow-net=127.0.0.1 --allow-read --allow-write tests/_helpers/kv_connect/main.ts \
 *   --path /tmp/fleet.kv --token s3cret-token --port 0
 * ```
 *
 * Prints one JSON line once it listens (`{"msg":"listening","url":...,"port":...}`), logs
 * refused requests to stderr, and closes cleanly on SIGTERM or SIGINT.
 *
 * @module
 */
import { startKvConnectServer } from "./server.ts";

const USAGE =
  "usage: main.ts --path FILE --token TOKEN [--port N] [--hostname H] [--ping-ms N] [--quiet]";

/** Parses `--name value` pairs (and bare `--quiet`); exits 2 on anything else. */
function parseArgs(args: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (let index = 0; index < args.length; index++) {
    const name = args[index];
    if (name === "--quiet") {
      out.set("quiet", "true");
      continue;
    }
    const value = args[index + 1];
    if (!name.startsWith("--") || value === undefined) {
      console.error(USAGE);
      Deno.exit(2);
    }
    out.set(name.slice(2), value);
    index++;
  }
  return out;
}

if (import.meta.main) {
  const args = parseArgs(Deno.args);
  const path = args.get("path");
  const accessToken = args.get("token");
  if (path === undefined || accessToken === undefined) {
    console.error(USAGE);
    Deno.exit(2);
  }
  const quiet = args.has("quiet");
  const server = await startKvConnectServer({
    path,
    accessToken,
    hostname: args.get("hostname") ?? "127.0.0.1",
    port: Number(args.get("port") ?? 0),
    watchPingIntervalMs: args.has("ping-ms") ? Number(args.get("ping-ms")) : undefined,
    log: quiet ? undefined : (line) => console.error(`kv-connect: ${line}`),
  });
  console.log(JSON.stringify({
    msg: "listening",
    url: server.url,
    port: server.port,
    databaseId: server.databaseId,
  }));
  const stop = async () => {
    await server.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
}
