/**
 * A worker for cross_thread_test.ts: a mirror hub over real `postMessage`. `fail` records a
 * failure; every publication is answered with the worker's view and the time it arrived.
 */
import { createMirrorHub } from "../../src/workers/mirror_breaker.ts";
import type { ToWorker } from "../../src/workers/protocol.ts";
import { policy } from "../breaker/_helpers.ts";

const scope = self as unknown as {
  postMessage(message: unknown): void;
  onmessage: ((event: MessageEvent) => void) | null;
  close(): void;
};
const hub = createMirrorHub({ post: (message) => scope.postMessage(message) });
const breaker = hub.breakerFor({ users: policy({ failureThreshold: 3 }) });

scope.onmessage = (event: MessageEvent<ToWorker | { type: "fail" } | { type: "stop" }>) => {
  const message = event.data;
  if (message.type === "breakers") {
    hub.publish(message.entries, message.degraded);
    scope.postMessage({
      type: "seen",
      state: breaker.view("users").state,
      admitted: breaker.admit("users").allowed,
      atMs: performance.timeOrigin + performance.now(),
    });
  } else if (message.type === "fail") {
    const admission = breaker.admit("users");
    if (admission.allowed) breaker.record("users", admission, { status: 503, durationMs: 1 });
  } else if (message.type === "stop") {
    hub.close();
    scope.close();
  }
};
