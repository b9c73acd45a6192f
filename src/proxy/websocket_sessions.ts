/**
 * The upgraded WebSocket connections a gateway has open, counted per service and, within a
 * service, per client address: the cap (`websocket.maxConnections`), the per-client bound
 * (`websocket.maxConnectionsPerClient`) and the `breakwater.websocket.open` gauge read it. One
 * per gateway, shared by every config generation, so a reload neither resets the counts nor
 * lets a service open its cap twice over.
 *
 * @module
 */

/** Why a slot was not given: the service's cap, or the client's share of it. */
export type SlotRefusal = "service" | "client";

/** Open upgraded connections per service. */
export interface WebSocketSessions {
  /**
   * Takes a slot of `service` for `client` (its address; null when unknown: only the cap
   * holds) unless `max` are open, or `maxPerClient` of them are the client's; null when taken,
   * else which bound refused it.
   */
  tryOpen(
    service: string,
    max: number,
    client: string | null,
    maxPerClient: number,
  ): SlotRefusal | null;
  /** Gives a slot of `service` taken for `client` back. */
  release(service: string, client: string | null): void;
  /** Open connections of every service that has had one. */
  open(): Array<{ service: string; open: number }>;
  /**
   * Resolves once no connection of any service is open (at once when none is). A drain waits
   * for it so every session's close, and its access-log line, happens before the process or
   * worker ends.
   */
  allClosed(): Promise<void>;
}

interface ServiceCount {
  open: number;
  /** Open connections per client address; an address leaves the map at 0 (no growth). */
  byClient: Map<string, number>;
}

/**
 * Creates the count.
 *
 * @example
 * ```ts
 * const sessions = createWebSocketSessions();
 * if (sessions.tryOpen("chat", 1000, "203.0.113.7", 100) !== null) return refuse("pool_saturated");
 * try { await relay(); } finally { sessions.release("chat", "203.0.113.7"); }
 * ```
 */
export function createWebSocketSessions(): WebSocketSessions {
  const counts = new Map<string, ServiceCount>();
  let total = 0;
  let closedWaiters: Array<() => void> = [];
  return {
    tryOpen(service, max, client, maxPerClient) {
      let count = counts.get(service);
      if (count === undefined) {
        count = { open: 0, byClient: new Map() };
        counts.set(service, count);
      }
      if (count.open >= max) return "service";
      const mine = client === null ? 0 : count.byClient.get(client) ?? 0;
      if (client !== null && mine >= maxPerClient) return "client";
      count.open++;
      total++;
      if (client !== null) count.byClient.set(client, mine + 1);
      return null;
    },
    release(service, client) {
      const count = counts.get(service);
      if (count === undefined || count.open === 0) return;
      count.open--;
      total--;
      if (total === 0 && closedWaiters.length > 0) {
        const waiters = closedWaiters;
        closedWaiters = [];
        for (const resolve of waiters) resolve();
      }
      if (client === null) return;
      const mine = (count.byClient.get(client) ?? 0) - 1;
      if (mine > 0) count.byClient.set(client, mine);
      else count.byClient.delete(client);
    },
    open: () => [...counts].map(([service, count]) => ({ service, open: count.open })),
    allClosed: () =>
      total === 0 ? Promise.resolve() : new Promise((resolve) => closedWaiters.push(resolve)),
  };
}
