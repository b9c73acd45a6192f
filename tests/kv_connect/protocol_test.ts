/**
 * The KV Connect test server against the real client: `Deno.openKv("http://127.0.0.1:PORT")` in
 * this process, the token in `DENO_KV_ACCESS_TOKEN`, and a real Deno KV file behind it. Every
 * operation the gateway uses (and a few it does not) must behave as on a local KV.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { openKvConnect, startKvConnectServer } from "../_helpers/kv_connect/mod.ts";
import type { KvConnectServer } from "../_helpers/kv_connect/server.ts";
import { waitFor, within } from "../_helpers/wait.ts";

const TOKEN = "test-access-token-0123";

interface Fixture {
  server: KvConnectServer;
  kv: Deno.Kv;
  path: string;
}

async function withServer(test: (fixture: Fixture) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "kv-connect-" });
  const path = `${dir}/served.kv`;
  const server = await startKvConnectServer({ path, accessToken: TOKEN });
  let kv: Deno.Kv | null = null;
  try {
    kv = await openKvConnect(server.url, TOKEN);
    await test({ server, kv, path });
  } finally {
    kv?.close();
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Reads a stream with a deadline, so a missing update fails the test instead of hanging it. */
async function readWithin<T>(
  reader: ReadableStreamDefaultReader<T>,
  timeoutMs: number,
): Promise<T> {
  const result = await within(reader.read(), timeoutMs, "a watch update");
  if (result.done) throw new Error("stream ended");
  return result.value;
}

Deno.test("set, get and delete keep values and versionstamps as a local KV does", async () => {
  await withServer(async ({ kv }) => {
    const value = {
      name: "orders",
      count: 7,
      big: 2n ** 70n,
      at: new Date(1_700_000_000_000),
      tags: new Set(["a"]),
      nested: { list: [1, "two", null] },
    };
    const first = await kv.set(["breakwater", "breaker", "orders"], value);
    assert.ok(first.ok);
    assert.match(first.versionstamp, /^[0-9a-f]{20}$/);
    const read = await kv.get(["breakwater", "breaker", "orders"]);
    assert.deepEqual(read.key, ["breakwater", "breaker", "orders"]);
    assert.deepEqual(read.value, value);
    assert.equal(read.versionstamp, first.versionstamp);

    const second = await kv.set(["breakwater", "breaker", "orders"], "again");
    assert.ok(second.versionstamp > first.versionstamp, "versionstamps grow with every commit");

    // Every key part type, and the three value encodings (V8, bytes, u64).
    const key: Deno.KvKey = ["s", 1, 2n, -3.5, true, false, new Uint8Array([0, 255, 0])];
    await kv.set(key, new Uint8Array([0, 1, 2, 0]));
    assert.deepEqual((await kv.get(key)).value, new Uint8Array([0, 1, 2, 0]));
    await kv.set(["u64"], new Deno.KvU64(42n));
    assert.deepEqual((await kv.get(["u64"])).value, new Deno.KvU64(42n));

    await kv.delete(["breakwater", "breaker", "orders"]);
    const gone = await kv.get(["breakwater", "breaker", "orders"]);
    assert.equal(gone.value, null);
    assert.equal(gone.versionstamp, null);
    const missing = await kv.get(["never", "written"]);
    assert.equal(missing.versionstamp, null);
  });
});

Deno.test("getMany reads several keys, present and absent, in order", async () => {
  await withServer(async ({ kv }) => {
    await kv.set(["r", "a"], 1);
    await kv.set(["r", "c"], 3);
    const keys = Array.from({ length: 10 }, (_, index) => ["r", String.fromCharCode(97 + index)]);
    const entries = await kv.getMany(keys);
    assert.equal(entries.length, 10);
    assert.deepEqual(entries.map((entry) => entry.value), [1, null, 3, ...Array(7).fill(null)]);
    assert.deepEqual(entries[2].key, ["r", "c"]);
  });
});

Deno.test("list: prefixes, start/end, limit, reverse and cursors", async () => {
  await withServer(async ({ kv }) => {
    for (let bucket = 0; bucket < 12; bucket++) {
      await kv.set(["failures", "orders", 3, bucket, "gw-1"], bucket);
    }
    await kv.set(["failures", "orders", 3], "the prefix itself is not listed");
    await kv.set(["failures", "orders", 4, 0, "gw-1"], "other generation");
    await kv.set(["failures", "ordersX"], "a sibling, not a child");

    const all = await Array.fromAsync(kv.list({ prefix: ["failures", "orders", 3] }));
    assert.deepEqual(all.map((entry) => entry.value), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);

    // The window read of src/breaker/kv_store.ts: buckets first..last of one generation.
    const window = await Array.fromAsync(kv.list({
      start: ["failures", "orders", 3, 4],
      end: ["failures", "orders", 3, 8],
    }));
    assert.deepEqual(window.map((entry) => entry.value), [4, 5, 6, 7]);

    const newest = await Array.fromAsync(
      kv.list({ prefix: ["failures", "orders", 3] }, { reverse: true, limit: 3 }),
    );
    assert.deepEqual(newest.map((entry) => entry.value), [11, 10, 9]);

    // Pages of 5 with a cursor, forwards and backwards; small batches force several round trips.
    const pages: unknown[][] = [];
    let cursor: string | undefined;
    for (let page = 0; page < 4; page++) {
      const iterator = kv.list({ prefix: ["failures", "orders", 3] }, { limit: 5, cursor });
      pages.push((await Array.fromAsync(iterator)).map((entry) => entry.value));
      cursor = iterator.cursor;
      if (cursor === "") break;
    }
    assert.deepEqual(pages, [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]);
    const backwards = await Array.fromAsync(
      kv.list({ prefix: ["failures", "orders", 3] }, { reverse: true, batchSize: 2 }),
    );
    assert.deepEqual(backwards.map((entry) => entry.value), [11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);

    const startInPrefix = await Array.fromAsync(
      kv.list({ prefix: ["failures", "orders", 3], start: ["failures", "orders", 3, 10] }),
    );
    assert.deepEqual(startInPrefix.map((entry) => entry.value), [10, 11]);
    assert.deepEqual(await Array.fromAsync(kv.list({ prefix: ["nothing"] })), []);
  });
});

Deno.test("atomic: check is a compare-and-set on the versionstamp; mutations apply all or none", async () => {
  await withServer(async ({ kv }) => {
    const key = ["breakwater", "breaker", "users"];
    // Absent key: a null check passes once.
    const created = await kv.atomic().check({ key, versionstamp: null }).set(key, { g: 0 })
      .commit();
    assert.ok(created.ok);
    const again = await kv.atomic().check({ key, versionstamp: null }).set(key, { g: 9 }).commit();
    assert.equal(again.ok, false);

    // Two writers read the same versionstamp; only the first commit wins.
    const seen = await kv.get(key);
    const winner = await kv.atomic().check(seen).set(key, { g: 1 }).set(["side"], "written")
      .commit();
    assert.ok(winner.ok);
    const loser = await kv.atomic().check(seen).set(key, { g: 2 }).set(["side"], "loser").commit();
    assert.equal(loser.ok, false);
    assert.deepEqual((await kv.get(key)).value, { g: 1 });
    assert.equal((await kv.get(["side"])).value, "written", "a failed check writes nothing");

    // Delete inside an atomic, guarded by a check.
    const current = await kv.get(key);
    assert.ok((await kv.atomic().check(current).delete(key).commit()).ok);
    assert.equal((await kv.get(key)).versionstamp, null);
  });
});

Deno.test("atomic: sum, min and max on KvU64; a sum on a non-u64 value is refused", async () => {
  await withServer(async ({ kv }) => {
    await kv.atomic().sum(["n"], 5n).commit();
    await kv.atomic().sum(["n"], 10n).commit();
    assert.deepEqual((await kv.get(["n"])).value, new Deno.KvU64(15n));
    await kv.atomic().min(["n"], 3n).commit();
    assert.deepEqual((await kv.get(["n"])).value, new Deno.KvU64(3n));
    await kv.atomic().max(["n"], 40n).max(["fresh"], 7n).commit();
    assert.deepEqual((await kv.get(["n"])).value, new Deno.KvU64(40n));
    assert.deepEqual((await kv.get(["fresh"])).value, new Deno.KvU64(7n));
    // u64 wraps around, as on a local KV.
    await kv.set(["w"], new Deno.KvU64(0xffffffffffffffffn));
    await kv.atomic().sum(["w"], 2n).commit();
    assert.deepEqual((await kv.get(["w"])).value, new Deno.KvU64(1n));

    await kv.set(["object"], { count: 1 });
    await assert.rejects(
      () => kv.atomic().sum(["object"], 1n).commit(),
      /status=400.*non-U64/,
    );
  });
});

Deno.test("expireIn reaches the file as an absolute expiry; no expiry stays -1", async () => {
  await withServer(async ({ kv, path }) => {
    const before = Date.now();
    await kv.set(["lease"], { holder: "gw-1" }, { expireIn: 60_000 });
    await kv.set(["forever"], 1);
    const after = Date.now();
    // Deno KV only collects expired keys about once a minute, so the proof is in the file:
    // the key of `["lease"]` as stored (0x01 + escaped client key + 0x00) and its expiry.
    const database = new DatabaseSync(path, { readOnly: true });
    try {
      const rows = database.prepare("select hex(k) as k, expiration_ms as expiry from kv")
        .all() as {
          k: string;
          expiry: number;
        }[];
      const stored = (clientKey: number[]) =>
        rows.find((row) =>
          row.k === ["01", ...clientKey.map((b) => b.toString(16).padStart(2, "0")), "00"]
            .join("").toUpperCase()
        );
      const lease = stored([0x02, ...new TextEncoder().encode("lease"), 0x00, 0xff]);
      assert.ok(lease, `lease row not found in ${JSON.stringify(rows)}`);
      assert.ok(
        lease.expiry >= before + 60_000 - 5 && lease.expiry <= after + 60_000 + 5,
        `expiry ${lease.expiry - before} ms after the write`,
      );
      const forever = stored([0x02, ...new TextEncoder().encode("forever"), 0x00, 0xff]);
      assert.equal(forever?.expiry, -1);
    } finally {
      database.close();
    }
  });
});

Deno.test("enqueue is refused cleanly (by the client, and by the server for a raw request)", async () => {
  await withServer(async ({ kv, server }) => {
    await assert.rejects(() => kv.enqueue({ job: 1 }), /not supported/i);
    const { headers, dataUrl } = await dataPath(server);
    // AtomicWrite { enqueues: [Enqueue { payload: [1], deadline_ms: 1 }] }
    const enqueue = [0x0a, 0x01, 0x01, 0x10, 0x01];
    const body = new Uint8Array([0x1a, enqueue.length, ...enqueue]);
    const response = await fetch(`${dataUrl}/atomic_write`, { method: "POST", headers, body });
    assert.equal(response.status, 400);
    assert.match(await response.text(), /Enqueue operations are not supported/);
  });
});

Deno.test("watch: several keys, the first state at once, then every change streamed", async () => {
  await withServer(async ({ kv, server }) => {
    await kv.set(["breaker", "a"], { state: "closed" });
    const reader = kv.watch([["breaker", "a"], ["breaker", "b"], ["breaker", "c"]]).getReader();
    try {
      const initial = await readWithin(reader, 5000);
      assert.deepEqual(initial.map((entry) => entry.value), [{ state: "closed" }, null, null]);
      assert.equal(server.stats().openWatches, 1);

      await kv.set(["breaker", "b"], { state: "open" });
      const afterB = await readWithin(reader, 5000);
      // Unchanged keys keep their value (a watcher never sees a key vanish that did not).
      assert.deepEqual(afterB.map((entry) => entry.value), [
        { state: "closed" },
        { state: "open" },
        null,
      ]);

      await kv.atomic().set(["breaker", "a"], { state: "open" }).set(["breaker", "c"], 1)
        .commit();
      let latest = await readWithin(reader, 5000);
      // One commit is one consistent snapshot; a server may still split nothing here.
      while (latest[2].value === null) latest = await readWithin(reader, 5000);
      assert.deepEqual(latest.map((entry) => entry.value), [
        { state: "open" },
        { state: "open" },
        1,
      ]);

      await kv.delete(["breaker", "b"]);
      const afterDelete = await readWithin(reader, 5000);
      assert.equal(afterDelete[1].value, null);
      assert.equal(afterDelete[1].versionstamp, null);
      // Writes to other keys do not wake the watcher.
      await kv.set(["unrelated"], 1);
      await kv.set(["breaker", "c"], 2);
      const next = await readWithin(reader, 5000);
      assert.equal(next[2].value, 2);
    } finally {
      await reader.cancel();
    }
    // The server notices the client went away and drops the stream.
    await waitFor(() => server.stats().openWatches === 0, {
      timeoutMs: 5000,
      what: "the server dropped the watch stream",
    });
  });
});

Deno.test("a wrong token: Deno.openKv fails with the server's reason", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kv-connect-" });
  const server = await startKvConnectServer({ path: `${dir}/served.kv`, accessToken: TOKEN });
  try {
    await assert.rejects(
      () => openKvConnect(server.url, "not-the-token-at-all"),
      /401.*Invalid access token/,
    );
    assert.equal(server.stats().unauthorized, 1);
    assert.equal(server.stats().metadata, 0);
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});

/** Performs the metadata exchange by hand; returns the data-path headers and URL. */
async function dataPath(
  server: KvConnectServer,
): Promise<{ headers: Record<string, string>; dataUrl: string; version: number }> {
  const response = await fetch(server.url, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ supportedVersions: [1, 2, 3] }),
  });
  assert.equal(response.status, 200);
  const metadata = await response.json();
  return {
    headers: {
      authorization: `Bearer ${metadata.token}`,
      "content-type": "application/x-protobuf",
      "x-denokv-version": String(metadata.version),
      "x-denokv-database-id": metadata.databaseId,
    },
    dataUrl: new URL(metadata.endpoints[0].url, server.url).href,
    version: metadata.version,
  };
}

Deno.test("metadata exchange: version negotiation, endpoints, token and expiry", async () => {
  await withServer(async ({ server }) => {
    const exchange = (body: string | null, token = TOKEN) =>
      fetch(server.url, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body,
      });
    const v3 = await exchange(JSON.stringify({ supportedVersions: [1, 2, 3] }));
    assert.equal(v3.status, 200);
    assert.match(v3.headers.get("content-type") ?? "", /application\/json/);
    const metadata = await v3.json();
    assert.equal(metadata.version, 3);
    assert.equal(metadata.databaseId, server.databaseId);
    assert.match(
      metadata.databaseId,
      /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
    );
    assert.deepEqual(metadata.endpoints, [{ url: "/v2", consistency: "strong" }]);
    assert.notEqual(metadata.token, TOKEN, "the data path has a token of its own");
    assert.ok(Date.parse(metadata.expiresAt) > Date.now() + 60_000);

    const v2 = await exchange(JSON.stringify({ supportedVersions: [1, 2] }));
    assert.equal((await v2.json()).version, 2);
    const onlyV1 = await exchange(JSON.stringify({ supportedVersions: [1] }));
    assert.equal(onlyV1.status, 400);
    assert.match(await onlyV1.text(), /protocol version/);
    const noBody = await exchange(null);
    assert.equal(noBody.status, 400);
    await noBody.body?.cancel();
    const badJson = await exchange("{");
    assert.equal(badJson.status, 400);
    await badJson.body?.cancel();
    const wrong = await exchange(JSON.stringify({ supportedVersions: [3] }), "wrong");
    assert.equal(wrong.status, 401);
    assert.equal(await wrong.text(), "Invalid access token.");
    const anonymous = await fetch(server.url, { method: "POST", body: "{}" });
    assert.equal(anonymous.status, 400, "no supportedVersions: refused before auth, as denokv");
    await anonymous.body?.cancel();
  });
});

Deno.test("data path: token, version and database id are checked; bad protobuf is a 400", async () => {
  await withServer(async ({ server }) => {
    const { headers, dataUrl } = await dataPath(server);
    const post = async (
      route: string,
      extra: Record<string, string>,
      body: Uint8Array<ArrayBuffer>,
    ) => {
      const response = await fetch(`${dataUrl}/${route}`, {
        method: "POST",
        headers: { ...headers, ...extra },
        body,
      });
      return { status: response.status, text: await response.text() };
    };
    // SnapshotRead { ranges: [ReadRange { start: "", end: [0xff], limit: 1 }] }
    const readAll = new Uint8Array([0x0a, 0x05, 0x12, 0x01, 0xff, 0x18, 0x01]);
    assert.equal((await post("snapshot_read", {}, readAll)).status, 200);
    assert.equal(
      (await post("snapshot_read", { authorization: `Bearer ${TOKEN}` }, readAll)).status,
      401,
      "the access token is not the data-path token",
    );
    assert.equal((await post("snapshot_read", { "x-denokv-version": "1" }, readAll)).status, 400);
    const otherDatabase = await post(
      "snapshot_read",
      { "x-denokv-database-id": crypto.randomUUID() },
      readAll,
    );
    assert.deepEqual(otherDatabase, { status: 400, text: "Invalid database id." });
    const truncated = await post("snapshot_read", {}, new Uint8Array([0x0a, 0x09, 0x12]));
    assert.equal(truncated.status, 400);
    assert.match(truncated.text, /Request protobuf is invalid/);
    // limit 0 is not a valid range.
    const zeroLimit = await post(
      "snapshot_read",
      {},
      new Uint8Array([0x0a, 0x03, 0x12, 0x01, 0xff]),
    );
    assert.equal(zeroLimit.status, 400);
    const badStamp = await post(
      "atomic_write",
      {},
      // AtomicWrite { checks: [Check { key: [2], versionstamp: [1, 2, 3] }] }
      new Uint8Array([0x0a, 0x08, 0x0a, 0x01, 0x02, 0x12, 0x03, 1, 2, 3]),
    );
    assert.deepEqual(badStamp, { status: 400, text: "Invalid versionstamp." });
    const unknown = await fetch(`${dataUrl}/nope`, { method: "POST", headers, body: readAll });
    assert.equal(unknown.status, 404);
    await unknown.body?.cancel();
  });
});

Deno.test("the database id lives in the file: a new server on the same file keeps it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kv-connect-" });
  try {
    const first = await startKvConnectServer({ path: `${dir}/served.kv`, accessToken: TOKEN });
    const id = first.databaseId;
    const kv = await openKvConnect(first.url, TOKEN);
    await kv.set(["kept"], "yes");
    kv.close();
    await first.close();
    const second = await startKvConnectServer({ path: `${dir}/served.kv`, accessToken: TOKEN });
    try {
      assert.equal(second.databaseId, id);
      const again = await openKvConnect(second.url, TOKEN);
      assert.equal((await again.get(["kept"])).value, "yes");
      // The server's own record is outside every client range.
      assert.deepEqual(
        (await Array.fromAsync(again.list({ prefix: [] }))).map((entry) => entry.key),
        [["kept"]],
      );
      again.close();
    } finally {
      await second.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
