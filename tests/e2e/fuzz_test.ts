/**
 * A bounded fuzz run against a real gateway process: generated paths (segments, dots,
 * %-encodings, backslashes, unicode), headers (random names and values, spoofed Host /
 * X-Forwarded-Host / Forwarded pointing at a canary), methods and small bodies, sent over raw
 * sockets and with fetch, from a fixed seed.
 *
 * Invariants:
 * - no request ever reaches a host outside the config: a third "canary" server, named by the
 *   spoofed targets and headers, receives nothing;
 * - each upstream only sees requests whose normalised path its service owns, with its own Host,
 *   without dot segments or backslashes; where the WHATWG parser gives the expected owner, the
 *   request went there (or to nobody: 404);
 * - every answer is a well-formed HTTP/1.1 response;
 * - the gateway never crashes (it still answers /healthz at the end) and its RSS stays bounded.
 */
import assert from "node:assert/strict";
import { startGatewayProcess } from "../_helpers/gateway.ts";
import { startUpstream } from "../_helpers/upstream.ts";
import { memoryKiB, seededRandom } from "../_helpers/process.ts";

const SEED = 0x5eed_b1a5;
const REQUESTS = 1500;
const WORKERS = 8;

const PREFIXES: Record<string, string> = { users: "/api/users", orders: "/api/orders" };

function owner(path: string): string | null {
  let best: string | null = null;
  for (const [name, prefix] of Object.entries(PREFIXES)) {
    if (path === prefix || path.startsWith(prefix + "/")) {
      if (best === null || prefix.length > PREFIXES[best].length) best = name;
    }
  }
  return best;
}

interface Generated {
  id: string;
  method: string;
  target: string;
  headers: [string, string][];
  body: string;
  viaFetch: boolean;
}

function generator(random: () => number, canaryHost: string) {
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)];
  const int = (n: number) => Math.floor(random() * n);
  const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  const word = (n: number) => Array.from({ length: n }, () => alnum[int(alnum.length)]).join("");
  const tchar = alnum + "!#$%&'*+-.^_`|~";
  const token = (n: number) => Array.from({ length: n }, () => tchar[int(tchar.length)]).join("");
  const segments = [
    "..",
    ".",
    "%2e%2e",
    "%2E%2e",
    ".%2e",
    "%2e",
    "%2f",
    "..%2f",
    "%5c",
    "..\\",
    "\\",
    "",
    "api",
    "users",
    "orders",
    "admin",
    "breakers",
    "healthz",
    "%252e%252e",
    "%00",
    "%ff",
    "%",
    "%zz",
    "é",
    "%C3%A9",
    "日本",
    "a;b",
    "x=y",
    canaryHost,
    "@" + canaryHost,
  ];
  const starts = [
    "/api/users",
    "/api/orders",
    "/api/users/",
    "/api",
    "/",
    "/api/usersX",
    "/api/orders..",
    `//${canaryHost}`,
    `//${canaryHost}/api/users`,
    `http://${canaryHost}`,
    `http://${canaryHost}/api/users`,
    "\\\\" + canaryHost + "\\api\\users",
    "/API/USERS",
  ];
  const methods = ["GET", "GET", "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
  let counter = 0;
  return (): Generated => {
    const id = `f${counter++}`;
    let target = pick(starts);
    for (let i = int(5); i > 0; i--) {
      const segment = random() < 0.6 ? pick(segments) : word(1 + int(8));
      target += (target.endsWith("/") ? "" : pick(["/", "/", "/", "\\"])) + segment;
    }
    if (random() < 0.3) target += `?${word(3)}=${pick(["1", "%2e%2e", "..", "a/b", canaryHost])}`;
    if (random() < 0.1) target += "#frag";
    const headers: [string, string][] = [];
    for (let i = int(4); i > 0; i--) {
      headers.push([`x-${token(1 + int(10))}`, token(int(30))]);
    }
    if (random() < 0.3) headers.push(["x-forwarded-host", canaryHost]);
    if (random() < 0.2) headers.push(["forwarded", `host=${canaryHost};proto=http`]);
    if (random() < 0.2) headers.push(["x-original-url", `http://${canaryHost}/`]);
    if (random() < 0.1) headers.push(["connection", `${pick(["keep-alive", "upgrade"])}, x-a`]);
    if (random() < 0.1) headers.push(["upgrade", "websocket"]);
    if (random() < 0.1) headers.push(["te", "trailers"]);
    const method = random() < 0.05 ? token(1 + int(6)).toUpperCase() : pick(methods);
    const body = ["POST", "PUT", "PATCH"].includes(method) && random() < 0.7 ? word(int(200)) : "";
    return {
      id,
      method,
      target,
      headers,
      body,
      viaFetch: random() < 0.3,
    };
  };
}

const STATUS_LINE = /^HTTP\/1\.1 [1-5]\d\d [^\r\n]*\r\n/;

async function sendRawRequest(port: number, bytes: Uint8Array, timeoutMs: number) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const timer = setTimeout(() => {
    try {
      conn.close();
    } catch {
      // closed
    }
  }, timeoutMs);
  const chunks: Uint8Array[] = [];
  try {
    await conn.write(bytes);
    const buffer = new Uint8Array(16 * 1024);
    while (true) {
      const n = await conn.read(buffer).catch(() => null);
      if (n === null) break;
      chunks.push(buffer.slice(0, n));
    }
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // closed by the timer
    }
  }
  return new TextDecoder().decode(
    chunks.reduce((all, c) => {
      const out = new Uint8Array(all.length + c.length);
      out.set(all);
      out.set(c, all.length);
      return out;
    }, new Uint8Array(0)),
  );
}

Deno.test("fuzz: generated requests never escape the config, crash the gateway or grow its memory", async () => {
  const seen: { service: string; fuzzId: string | null; path: string; host: string | null }[] = [];
  const recorder = (service: string) => (request: Request) => {
    const url = request.url;
    seen.push({
      service,
      fuzzId: request.headers.get("x-fuzz-id"),
      path: url.slice(url.indexOf("/", url.indexOf("://") + 3)),
      host: request.headers.get("host"),
    });
    return new Response(`svc:${service}`);
  };
  const users = startUpstream(recorder("users"));
  const orders = startUpstream(recorder("orders"));
  const canary = startUpstream(() => new Response("CANARY"));
  const hostOf: Record<string, string> = {
    users: new URL(users.origin).host,
    orders: new URL(orders.origin).host,
  };
  const canaryHost = new URL(canary.origin).host;
  const gateway = await startGatewayProcess({
    limits: { maxBodyBytes: 4096, maxConnections: 64 },
    services: {
      users: { prefix: "/api/users", upstreams: [users.origin], timeoutMs: 3000 },
      orders: { prefix: "/api/orders", upstreams: [orders.origin], timeoutMs: 3000 },
    },
  });
  const pid = gateway.child.pid;
  const port = Number(new URL(gateway.url).port);
  const started = performance.now();
  const problems: string[] = [];
  const generated = new Map<string, Generated>();
  const answeredBy = new Map<string, string>();
  const statuses: Record<number, number> = {};
  try {
    const next = generator(seededRandom(SEED), canaryHost);
    // Warm up, then take the baseline RSS.
    for (let i = 0; i < 50; i++) await (await fetch(`${gateway.url}/api/users/warm`)).text();
    const rssStart = memoryKiB(pid).rss;
    let rssMax = rssStart;
    const queue = Array.from({ length: REQUESTS }, () => next());
    for (const g of queue) generated.set(g.id, g);
    let index = 0;
    const worker = async () => {
      while (index < queue.length) {
        const g = queue[index++];
        if (index % 250 === 0) rssMax = Math.max(rssMax, memoryKiB(pid).rss);
        let status: number;
        let body = "";
        if (g.viaFetch) {
          let url: URL;
          try {
            url = new URL(g.target, gateway.url);
          } catch {
            continue;
          }
          if (url.host !== new URL(gateway.url).host) {
            // fetch connects where the URL says: keep the path, aim it at the gateway.
            url = new URL(gateway.url);
            url.pathname = new URL(g.target, "http://x").pathname.replace(/^\/+/, "/");
          }
          try {
            const response = await fetch(url, {
              method: g.method,
              headers: [...g.headers, ["x-fuzz-id", g.id]],
              body: g.body === "" || g.method === "GET" || g.method === "HEAD" ? undefined : g.body,
              signal: AbortSignal.timeout(5000),
            });
            status = response.status;
            body = await response.text();
          } catch (error) {
            // fetch itself refused the input (invalid method or header): not the gateway's.
            if (error instanceof TypeError && !String(error).includes("connection")) continue;
            problems.push(`${g.id} fetch failed: ${error}`);
            continue;
          }
        } else {
          const head = [
            `${g.method} ${g.target} HTTP/1.1`,
            `Host: ${g.headers.some(([n]) => n === "x-forwarded-host") ? canaryHost : "gw.test"}`,
            ...g.headers.map(([n, v]) => `${n}: ${v}`),
            `X-Fuzz-Id: ${g.id}`,
            `Content-Length: ${new TextEncoder().encode(g.body).length}`,
            "Connection: close",
          ].join("\r\n");
          const raw = await sendRawRequest(
            port,
            new TextEncoder().encode(`${head}\r\n\r\n${g.body}`),
            5000,
          );
          if (!STATUS_LINE.test(raw)) {
            problems.push(
              `${g.id} ${JSON.stringify(g.target)}: not an HTTP response: ${
                JSON.stringify(raw.slice(0, 80))
              }`,
            );
            continue;
          }
          status = Number(raw.slice(9, 12));
          const headEnd = raw.indexOf("\r\n\r\n");
          if (headEnd < 0) {
            problems.push(`${g.id}: response head never ended`);
            continue;
          }
          body = raw.slice(headEnd + 4);
        }
        statuses[status] = (statuses[status] ?? 0) + 1;
        if (body.includes("CANARY")) problems.push(`${g.id} reached the canary`);
        const svc = /^svc:(\w+)$/.exec(body)?.[1];
        if (svc !== undefined) answeredBy.set(g.id, svc);
        if (status >= 500 && status !== 502 && status !== 503 && status !== 504) {
          problems.push(`${g.id} ${g.method} ${JSON.stringify(g.target)} -> ${status}: ${body}`);
        }
      }
    };
    await Promise.all(Array.from({ length: WORKERS }, worker));
    rssMax = Math.max(rssMax, memoryKiB(pid).rss);

    // The gateway is alive and well.
    const health = await fetch(`${gateway.url}/healthz`);
    assert.equal(health.status, 200);
    await health.text();
    const after = await fetch(`${gateway.url}/api/orders/after`);
    assert.equal(await after.text(), "svc:orders");

    assert.equal(canary.requests.length, 0, "the canary was contacted");
    for (const request of seen) {
      const where = `${request.service} saw ${JSON.stringify(request.path)} (${request.fuzzId})`;
      if (request.host !== hostOf[request.service]) {
        problems.push(`${where} with Host ${request.host}`);
      }
      const path = request.path.split("?")[0];
      if (owner(path) !== request.service) problems.push(`${where}: not its prefix`);
      if (path.split("/").some((s) => s === ".." || s === ".")) problems.push(`${where}: dots`);
      if (path.includes("\\")) problems.push(`${where}: backslash`);
      if (/%2e/i.test(path.split("/").find((s) => /^(%2e|\.){1,2}$/i.test(s)) ?? "")) {
        problems.push(`${where}: encoded dot segment`);
      }
    }
    // Where the WHATWG parser names the owner of an origin-form target, only it answered.
    let checked = 0;
    for (const [id, g] of generated) {
      if (!g.target.startsWith("/") || g.target.startsWith("//")) continue;
      if (/^\/\\|^\\/.test(g.target)) continue;
      let path: string;
      try {
        path = new URL(g.target, "http://gw.invalid").pathname;
      } catch {
        continue;
      }
      if (path === "/healthz" || path === "/readyz") continue;
      const expected = owner(path);
      const got = answeredBy.get(id);
      if (got !== undefined) {
        checked++;
        if (got !== expected) {
          problems.push(
            `${id} ${JSON.stringify(g.target)}: ${got} answered, ${expected} owns ${path}`,
          );
        }
      }
    }
    assert.deepEqual(problems.slice(0, 20), [], `${problems.length} problems`);
    assert.ok(checked > 200, `only ${checked} routing checks`);
    assert.ok(
      seen.length > 300,
      `only ${seen.length} reached upstreams: ${JSON.stringify(statuses)}`,
    );
    // Memory bounded: a leak of even 10 KiB per request would show as ~15 MiB here.
    assert.ok(
      rssMax - rssStart < 64 * 1024,
      `RSS grew from ${rssStart} KiB to ${rssMax} KiB`,
    );
    assert.ok(performance.now() - started < 30_000, "fuzz run took too long");
    // The process did not die along the way.
    const exited = await Promise.race([
      gateway.child.status.then(() => true),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 10)),
    ]);
    assert.equal(exited, false);
  } finally {
    const status = await gateway.stop();
    await users.close();
    await orders.close();
    await canary.close();
    assert.equal(status.code, 0, gateway.stderr());
  }
});
