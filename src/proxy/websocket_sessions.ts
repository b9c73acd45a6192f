/**
 * The upgraded WebSocket connections a gateway has open, counted per service: the cap
 * (`websocket.maxConnections`) and the `breakwater.websocket.open` gauge read it. One per
 * gateway, shared by every config generation, so a reload neither resets the count nor lets
 * a service open its cap twice over.
 *
 * @module
 */

/** Open upgraded connections per service. */
export interface WebSocketSessions {
  /** Takes a slot of `service` unless `max` are open; true when taken. */
  tryOpen(service: string, max: number): boolean;
  /** Gives a slot of `service` back. */
  release(service: string): void;
  /** Open connections of every service that has had one. */
  open(): Array<{ service: string; open: number }>;
}

/**
 * Creates the count.
 *
 * @example
 * ```ts
 * const sessions = createWebSocketSessions();
 * if (!sessions.tryOpen("chat", 1000)) return refuse("pool_saturated");
 * try { await relay(); } finally { sessions.release("chat"); }
 * ```
 */
export function createWebSocketSessions(): WebSocketSessions {
  const counts = new Map<string, number>();
  return {
    tryOpen(service, max) {
      const open = counts.get(service) ?? 0;
      if (open >= max) return false;
      counts.set(service, open + 1);
      return true;
    },
    release(service) {
      counts.set(service, Math.max(0, (counts.get(service) ?? 0) - 1));
    },
    open: () => [...counts].map(([service, open]) => ({ service, open })),
  };
}
