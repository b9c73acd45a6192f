/** The launcher's permission derivation, as pure functions. */
import assert from "node:assert/strict";
import {
  gatewayArgs,
  kvFolderOf,
  permissionFlags,
  permissionsFor,
  resolvePath,
} from "../../src/launch.ts";

Deno.test("resolvePath: relative paths against the working directory, dot segments resolved", () => {
  assert.equal(resolvePath("/srv/gw", "./breakwater.json"), "/srv/gw/breakwater.json");
  assert.equal(resolvePath("/srv/gw", "../etc/gw.json"), "/srv/etc/gw.json");
  assert.equal(resolvePath("/srv/gw", "/etc//breakwater/./gw.json"), "/etc/breakwater/gw.json");
  assert.equal(resolvePath("/", "data/bw.kv"), "/data/bw.kv");
});

Deno.test("kvFolderOf: a file's folder; nothing for :memory:, KV Connect URLs and null", () => {
  assert.equal(kvFolderOf("./data/breakwater.kv", "/app"), "/app/data");
  assert.equal(kvFolderOf("bw.kv", "/app"), "/app");
  assert.equal(kvFolderOf("/bw.kv", "/app"), "/");
  assert.equal(kvFolderOf(":memory:", "/app"), null);
  assert.equal(kvFolderOf("http://denokv:4512", "/app"), null);
  assert.equal(kvFolderOf("HTTPS://kv.example.com/db", "/app"), null);
  assert.equal(kvFolderOf(null, "/app"), null);
});

Deno.test("permissionsFor: config, KV folder, cgroup and /proc/self; write only the KV folder", () => {
  assert.deepEqual(permissionsFor("/etc/breakwater/gw.json", "/var/lib/breakwater/bw.kv", "/srv"), {
    read: ["/etc/breakwater/gw.json", "/var/lib/breakwater", "/sys/fs/cgroup", "/proc/self"],
    write: ["/var/lib/breakwater"],
  });
  assert.deepEqual(permissionsFor("gw.json", "http://denokv:4512", "/srv"), {
    read: ["/srv/gw.json", "/sys/fs/cgroup", "/proc/self"],
    write: [],
  });
  // An unreadable or invalid config: the gateway reports it before touching KV.
  assert.deepEqual(permissionsFor("gw.json", undefined, "/srv").write, []);
});

Deno.test("permissionFlags: fixed flags, then read and write lists; never -A; commas refused", () => {
  assert.deepEqual(permissionFlags({ read: ["/a.json", "/d"], write: ["/d"] }), [
    "--allow-net",
    "--allow-env",
    "--allow-sys",
    "--allow-read=/a.json,/d",
    "--allow-write=/d",
  ]);
  assert.deepEqual(
    permissionFlags({ read: ["/a.json"], write: [] }).at(-1),
    "--allow-read=/a.json",
  );
  assert.throws(() => permissionFlags({ read: ["/a,b.json"], write: [] }), /split on commas/);
});

Deno.test("gatewayArgs: run with the project's deno.json, no prompt, flags, module, then the user's args", () => {
  assert.deepEqual(
    gatewayArgs({
      denoConfigPath: "/p/deno.json",
      mainModule: "file:///p/src/main.ts",
      flags: ["--allow-net"],
      args: ["--check"],
    }),
    [
      "run",
      "--config=/p/deno.json",
      "--no-prompt",
      "--allow-net",
      "file:///p/src/main.ts",
      "--check",
    ],
  );
});
