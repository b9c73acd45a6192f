/** The WebSocket session count: the cap, the per-client bound, and the drain's wait for zero. */
import assert from "node:assert/strict";
import { createWebSocketSessions } from "../../src/proxy/websocket_sessions.ts";

/** Whether `promise` has settled after the queued microtasks ran. */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  promise.then(() => done = true);
  await new Promise((resolve) => setTimeout(resolve, 0));
  return done;
}

Deno.test("allClosed resolves at once when nothing is open, else when the last slot is released", async () => {
  const sessions = createWebSocketSessions();
  assert.equal(await settled(sessions.allClosed()), true);
  assert.equal(sessions.tryOpen("chat", 10, "203.0.113.7", 10), null);
  assert.equal(sessions.tryOpen("feed", 10, null, 10), null);
  const waiting = sessions.allClosed();
  assert.equal(await settled(waiting), false);
  sessions.release("chat", "203.0.113.7");
  assert.equal(await settled(waiting), false, "feed still has a session");
  sessions.release("feed", null);
  assert.equal(await settled(waiting), true);
  // A release without a session (twice for one) changes nothing.
  sessions.release("feed", null);
  assert.deepEqual(sessions.open(), [{ service: "chat", open: 0 }, { service: "feed", open: 0 }]);
  assert.equal(sessions.tryOpen("chat", 1, "203.0.113.7", 1), null);
  assert.equal(sessions.tryOpen("chat", 1, "198.51.100.1", 1), "service");
});
