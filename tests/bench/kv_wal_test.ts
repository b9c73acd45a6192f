/**
 * The bench's KV write counter (`bench/lib/kv_wal.ts`) against a real Deno KV file: every
 * `set` and every atomic commit is one commit, whatever its size in pages.
 */
import assert from "node:assert/strict";
import { commitsBetween, walCommits } from "../../bench/lib/kv_wal.ts";

Deno.test("walCommits: one commit per set or atomic commit, however many pages it wrote", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kv-wal-" });
  const path = `${dir}/test.kv`;
  const kv = await Deno.openKv(path);
  try {
    await kv.set(["warm"], 0);
    const before = walCommits(path);
    assert.ok(before !== null, "a KV file in WAL mode has a log after its first write");
    for (let i = 0; i < 5; i++) await kv.set(["a", i], i);
    await kv.atomic().set(["b", 1], 1).set(["b", 2], 2).set(["b", 3], 3).commit();
    // 60 KiB: several 4 KiB pages in one commit (the file grows by many frames).
    await kv.set(["big"], new Uint8Array(60 * 1024));
    const after = walCommits(path);
    assert.equal(commitsBetween(before, after), 7);
    assert.equal(commitsBetween(before, { salt: "other", commits: 99 }), null, "a restarted log");
    assert.equal(commitsBetween(null, after), null);
    assert.equal(walCommits(`${dir}/missing.kv`), null);
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});
