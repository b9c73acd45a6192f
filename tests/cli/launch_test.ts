/** The launcher's permission derivation, as pure functions. */
import assert from "node:assert/strict";
import {
  gatewayArgs,
  kvFolderOf,
  launchPermissions,
  permissionFlags,
  permissionsFor,
  resolvePath,
  workerCodePaths,
} from "../../src/launch.ts";
import { parseConfig } from "../../src/config/schema.ts";

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

Deno.test("launchPermissions: the KV folder, TLS files and worker code from one parsed config", () => {
  const config = parseConfig({
    kv: { path: "data/bw.kv" },
    listen: { tls: { certFile: "/tls/cert.pem", keyFile: "/tls/key.pem" } },
    services: {
      a: {
        prefix: "/a",
        upstreams: ["https://a.internal"],
        tls: { caFile: "ca.pem", certFile: null, keyFile: null },
      },
    },
  });
  assert.deepEqual(launchPermissions("gw.json", config, "/srv"), {
    read: [
      "/srv/gw.json",
      "/srv/data",
      "/tls/cert.pem",
      "/tls/key.pem",
      "/srv/ca.pem",
      "/sys/fs/cgroup",
      "/proc/self",
    ],
    write: ["/srv/data"],
  });
  // Without a TLS listener the default workers ("auto") may run: the gateway's code is read.
  const plain = parseConfig({
    kv: { path: ":memory:" },
    services: { a: { prefix: "/a", upstreams: ["http://a.internal"] } },
  });
  const root = decodeURIComponent(new URL("../../", import.meta.url).pathname);
  assert.deepEqual(launchPermissions("/gw.json", plain, "/srv"), {
    read: ["/gw.json", ...workerCodePaths(root), "/sys/fs/cgroup", "/proc/self"],
    write: [],
  });
  // No valid config: only the config itself (the gateway then exits 2 naming the field).
  assert.deepEqual(launchPermissions("/gw.json", undefined, "/srv"), {
    read: ["/gw.json", "/sys/fs/cgroup", "/proc/self"],
    write: [],
  });
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

Deno.test("gatewayArgs: run with the project's deno.json, no prompt, V8 flags, permissions, module, then the user's args", () => {
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
      "--v8-flags=--no-allocation-site-pretenuring",
      "--allow-net",
      "file:///p/src/main.ts",
      "--check",
    ],
  );
});
