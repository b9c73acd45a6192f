/**
 * What landed today, attacked: the admin API's `by` label and audit `limit`, fallback while open
 * with hostile paths, HEAD and clients that vanish, and the TLS listener with bytes and frames a
 * real client would never send (raw sockets, a hand-made HTTP/2 client over `Deno.connectTls`).
 * For every class of bad input: a clear error, nothing lost, and no breaker moved by anyone but
 * the upstream.
 *
 * @module
 */
import assert from "node:assert/strict";
import { startTestGateway, type TestGateway } from "../_helpers/gateway.ts";
import { startUpstream } from "../_helpers/upstream.ts";
import { bounded, closeAll } from "../_helpers/wait.ts";

const TOKEN = "hostile-edge-admin-token-0123456789";
const AUTH = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" };

async function exchange(url: string, init: RequestInit = {}) {
  const response = await fetch(url, bounded(init));
  return { status: response.status, headers: response.headers, text: await response.text() };
}

function force(gw: TestGateway, service: string, body: unknown) {
  return exchange(`${gw.adminUrl}/admin/breakers/${service}`, {
    method: "POST",
    headers: AUTH,
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

Deno.test("hostile admin: 'by' labels that hide, spoof or flood are 400 naming by; audit limit is strict", async () => {
  const upstream = startUpstream(() => new Response("ok"));
  const gw = await startTestGateway(
    { services: { api: { prefix: "/api", upstreams: [upstream.origin] } } },
    { BREAKWATER_ADMIN_TOKEN: TOKEN },
  );
  try {
    const refused: Record<string, string> = {
      "NUL": "a\u0000b",
      "ESC (a terminal escape)": "\u001b[31mroot\u001b[0m",
      "DEL": "a\u007f",
      "CR LF (a forged log line)": "alice\r\nbreaker forced by=bob",
      "NEL, a C1 control": "alice\u0085bob",
      "CSI, a C1 control": "\u009b31mroot",
      "RIGHT-TO-LEFT OVERRIDE (spoofs the timeline)": "\u202enimda",
      "RIGHT-TO-LEFT ISOLATE": "\u2067alice",
      "ZERO WIDTH SPACE only": "\u200b",
      "LINE SEPARATOR": "alice\u2028bob",
      "a lone surrogate": "alice\ud800",
      "65 characters": "x".repeat(65),
      "1 MiB": "y".repeat(1 << 20),
      "blank": "   ",
      "empty": "",
      "the token inside": `ops ${TOKEN}`,
    };
    for (const [what, by] of Object.entries(refused)) {
      const answer = await force(gw, "api", { action: "open", by });
      assert.equal(answer.status, 400, `${what}: ${answer.status} ${answer.text.slice(0, 200)}`);
      assert.match(answer.text, /by/, what);
      assert.ok(!answer.text.includes(TOKEN), `${what}: the answer echoes the token`);
    }
    for (const body of ['{"action":"open","by":123}', '{"action":"open","by":null}', "[", "{}"]) {
      const answer = await force(gw, "api", body);
      assert.equal(answer.status, 400, body);
    }
    // None of those moved the breaker or reached the timeline.
    assert.equal(gw.gateway.breaker.view("api").state, "closed");
    const quiet = JSON.parse((await exchange(`${gw.adminUrl}/admin/audit`)).text);
    assert.deepEqual(quiet.entries, []);

    // Printable unicode is a fine label and is kept as sent (trimmed).
    for (const by of ["Zoë Ångström", "运维-值班", "  ops-bot  "]) {
      const answer = await force(gw, "api", { action: "open", by });
      assert.equal(answer.status, 200, `${by}: ${answer.text}`);
    }
    const audit = JSON.parse((await exchange(`${gw.adminUrl}/admin/audit?limit=3`)).text);
    assert.deepEqual(
      audit.entries.map((entry: { by: string }) => entry.by),
      ["ops-bot", "运维-值班", "Zoë Ångström"],
    );

    // Audit `limit`: 1..1000 written plainly, nothing else.
    for (
      const limit of [
        "0",
        "-1",
        "1001",
        "1e2",
        "0x10",
        "1.0",
        "%201",
        "1%20",
        "%00",
        "%2B1",
        "99999999999",
        "abc",
        "١٢",
      ]
    ) {
      const answer = await exchange(`${gw.adminUrl}/admin/audit?limit=${limit}`);
      assert.equal(answer.status, 400, `limit=${limit}: ${answer.status}`);
      assert.match(answer.text, /limit/);
    }
    for (
      const [query, count] of [["limit=1", 1], ["limit=1000", 3], [
        "limit=1&limit=5000",
        1,
      ]] as const
    ) {
      const answer = await exchange(`${gw.adminUrl}/admin/audit?${query}`);
      assert.equal(answer.status, 200, query);
      assert.equal(JSON.parse(answer.text).entries.length, count, query);
    }
    for (const service of ["__proto__", "constructor", "api%00", "API", "../api"]) {
      const answer = await exchange(`${gw.adminUrl}/admin/audit?service=${service}`);
      assert.equal(answer.status, 404, service);
    }
  } finally {
    await closeAll({ gw, upstream });
  }
});
