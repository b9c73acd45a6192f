/**
 * The KV Connect test server across processes: clients in other processes racing on one key,
 * and the server killed (SIGKILL) and restarted on the same port and file while a client is
 * connected. The remote path of Deno KV must survive both, as it would against `denokv`.
 */
import assert from "node:assert/strict";
import {
  openKvConnect,
  spawnKvConnectServer,
  startKvConnectServer,
} from "../_helpers/kv_connect/mod.ts";
import { within } from "../_helpers/wait.ts";

const TOKEN = "test-access-token-0123";

Deno.test("three client processes: compare-and-set increments lose no update", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kv-connect-" });
  const server = await startKvConnectServer({ path: `${dir}/served.kv`, accessToken: TOKEN });
  const ITERATIONS = 25;
  try {
    const startAt = Date.now() + 1500;
    const outputs = await within(
      Promise.all(Array.from({ length: 3 }, () =>
        new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "--quiet",
            "--unstable-kv",
            "--allow-net=127.0.0.1",
            "--allow-env=DENO_KV_ACCESS_TOKEN",
            new URL("./_cas_child.ts", import.meta.url).pathname,
            server.url,
            String(ITERATIONS),
            String(startAt),
          ],
          env: { DENO_KV_ACCESS_TOKEN: TOKEN },
          stdout: "piped",
          stderr: "piped",
        }).output())),
      30_000,
      "client processes",
    );
    const reports = outputs.map((output) => {
      assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
      return JSON.parse(new TextDecoder().decode(output.stdout)) as {
        committed: number;
        conflicts: number;
      };
    });
    const kv = await openKvConnect(server.url, TOKEN);
    try {
      assert.equal((await kv.get(["counter"])).value, 3 * ITERATIONS);
    } finally {
      kv.close();
    }
    const conflicts = reports.reduce((sum, report) => sum + report.conflicts, 0);
    console.log(`3 x ${ITERATIONS} CAS increments, ${conflicts} lost races retried, none lost`);
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server killed and restarted on the same port and file: the client reconnects", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kv-connect-" });
  const path = `${dir}/served.kv`;
  let server = await spawnKvConnectServer({ path, accessToken: TOKEN });
  let kv: Deno.Kv | null = null;
  let reader: ReadableStreamDefaultReader<Deno.KvEntryMaybe<unknown>[]> | null = null;
  try {
    kv = await openKvConnect(server.url, TOKEN);
    await kv.set(["breaker", "orders"], { state: "closed", generation: 1 });
    reader = kv.watch([["breaker", "orders"]]).getReader();
    const first = await within(reader.read(), 5000, "first watch state");
    assert.deepEqual(first.value?.[0].value, { state: "closed", generation: 1 });

    await server.stop("SIGKILL");
    // While the server is gone, calls neither fail nor return: the client retries with
    // backoff (a gateway bounds them with its own KV timeout).
    const readDuringOutage = kv.get(["breaker", "orders"]);
    const writeDuringOutage = kv.set(["written", "during", "outage"], 1);
    const pending = await Promise.race([
      readDuringOutage.then(() => "settled", () => "settled"),
      new Promise((resolve) => setTimeout(() => resolve("pending"), 500)),
    ]);
    assert.equal(pending, "pending");

    server = await spawnKvConnectServer({ path, accessToken: TOKEN, port: server.port });
    const read = await within(readDuringOutage, 10_000, "read issued during the outage");
    assert.deepEqual(read.value, { state: "closed", generation: 1 }, "the file kept the data");
    assert.ok((await within(writeDuringOutage, 10_000, "write issued during the outage")).ok);

    // The watch stream reconnected by itself: a change after the restart arrives.
    await kv.set(["breaker", "orders"], { state: "open", generation: 1 });
    const deadline = Date.now() + 10_000;
    let seen: unknown = null;
    while (Date.now() < deadline) {
      const next = await within(reader.read(), deadline - Date.now(), "watch after restart");
      seen = next.value?.[0].value;
      if ((seen as { state?: string } | null)?.state === "open") break;
    }
    assert.deepEqual(seen, { state: "open", generation: 1 });
    assert.equal((await kv.get(["written", "during", "outage"])).value, 1);
  } finally {
    await reader?.cancel().catch(() => {});
    // Close while the server is up: Deno 2.9.6's remote client keeps retrying a call that is
    // pending at close() forever, which would keep this process busy.
    kv?.close();
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main.ts: missing arguments are a usage error (exit 2), not a server on a default file", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--unstable-kv",
      new URL("../_helpers/kv_connect/main.ts", import.meta.url).pathname,
      "--port",
      "0",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(output.code, 2);
  assert.match(
    new TextDecoder().decode(output.stderr),
    /usage: main\.ts --path FILE --token TOKEN/,
  );
  assert.equal(new TextDecoder().decode(output.stdout), "");
});
