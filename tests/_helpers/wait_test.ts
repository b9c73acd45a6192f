/** The bounded waits themselves: they end, and their errors say what was waited for. */
import assert from "node:assert/strict";
import { bounded, closeAll, waitFor, WaitTimeoutError, within } from "./wait.ts";

Deno.test("waitFor: returns once the condition holds", async () => {
  let checks = 0;
  await waitFor(() => ++checks >= 3, { timeoutMs: 1000, intervalMs: 1 });
  assert.equal(checks, 3);
});

Deno.test("waitFor: gives up in time and names what it waited for", async () => {
  const started = performance.now();
  await assert.rejects(
    waitFor(() => false, { timeoutMs: 50, what: "the impossible" }),
    (error: Error) =>
      error instanceof WaitTimeoutError && /50 ms waiting for the impossible/.test(error.message),
  );
  assert.ok(performance.now() - started < 500);
  // Without `what`, the condition's own source names it.
  const never = 0;
  await assert.rejects(
    waitFor(() => never > 1, { timeoutMs: 20 }),
    /waiting for \(\)\s*=>\s*never > 1/,
  );
});

Deno.test("waitFor: an async check that hangs is cut off at the deadline", async () => {
  let release = () => {};
  const hanging = new Promise<boolean>((resolve) => release = () => resolve(false));
  const started = performance.now();
  await assert.rejects(
    waitFor(() => hanging, { timeoutMs: 50, what: "a hung check" }),
    /hung check/,
  );
  assert.ok(performance.now() - started < 500);
  release();
});

Deno.test("waitFor: a check that throws fails the wait at once", async () => {
  await assert.rejects(
    waitFor(() => assert.fail("boom"), { timeoutMs: 5000 }),
    /boom/,
  );
});

Deno.test("within: passes a result through, or names what timed out", async () => {
  assert.equal(await within(Promise.resolve(7), 100, "seven"), 7);
  let release = () => {};
  const never = new Promise<void>((resolve) => release = resolve);
  await assert.rejects(within(never, 20, "the answer"), /timed out after 20 ms: the answer/);
  release();
});

Deno.test("closeAll: a close that hangs does not stop the rest, and fails the call", async () => {
  const closed: string[] = [];
  let releaseGateway = () => {};
  // The gateway only finishes closing once the upstream is gone (a request waiting on it).
  const upstreamGone = new Promise<void>((resolve) => releaseGateway = resolve);
  await assert.rejects(
    closeAll({
      gateway: { close: () => upstreamGone.then(() => void closed.push("gateway")) },
      upstream: {
        close: () => {
          closed.push("upstream");
          releaseGateway();
        },
      },
      never: null,
    }, 30),
    /did not close within 30 ms: gateway/,
  );
  assert.deepEqual(closed, ["upstream", "gateway"], "the late close got its second chance");
});

Deno.test("bounded: a fetch that gets no answer is aborted", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) accepted.push(conn); // never answers
  })();
  try {
    const { port } = listener.addr as Deno.NetAddr;
    await assert.rejects(
      fetch(`http://127.0.0.1:${port}/`, bounded({}, 50)),
      (error: Error) => error.name === "TimeoutError",
    );
  } finally {
    listener.close();
    for (const conn of accepted) conn.close();
    await accepting.catch(() => {});
  }
});
