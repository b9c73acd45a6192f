/**
 * A real OTLP/HTTP metrics receiver for tests: `Deno.serve` on 127.0.0.1, port 0. Payloads
 * are decoded with `JSON.parse` (the OTLP/HTTP JSON encoding the exporter sends). It can be
 * told to answer normally, fail with a status, or hang until the client gives up.
 *
 * @module
 */

/** OTLP JSON `AnyValue`. */
export interface AnyValue {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
}
/** OTLP JSON `KeyValue`. */
export interface KeyValue {
  key: string;
  value: AnyValue;
}
/** A number data point (sum or gauge). */
export interface NumberDataPoint {
  attributes?: KeyValue[];
  asDouble?: number;
  asInt?: string | number;
  timeUnixNano: string;
}
/** A histogram data point. */
export interface HistogramDataPoint {
  attributes?: KeyValue[];
  count: string | number;
  sum?: number;
  bucketCounts: Array<string | number>;
  explicitBounds: number[];
}
/** One metric of the payload. */
export interface OtlpMetric {
  name: string;
  unit?: string;
  description?: string;
  sum?: { dataPoints: NumberDataPoint[]; isMonotonic?: boolean; aggregationTemporality?: number };
  gauge?: { dataPoints: NumberDataPoint[] };
  histogram?: { dataPoints: HistogramDataPoint[]; aggregationTemporality?: number };
}
/** `ExportMetricsServiceRequest` in its JSON encoding. */
export interface ExportRequest {
  resourceMetrics: Array<{
    resource: { attributes: KeyValue[] };
    scopeMetrics: Array<{ scope: { name: string }; metrics: OtlpMetric[] }>;
  }>;
}

/** What one POST carried. */
export interface ReceivedExport {
  path: string;
  contentType: string | null;
  headers: Headers;
  body: ExportRequest;
}

/** How the receiver answers. */
export type ReceiverMode = { kind: "ok" } | { kind: "fail"; status: number } | { kind: "hang" };

/** A running receiver. */
export interface OtlpReceiver {
  /** Base URL, e.g. `http://127.0.0.1:41234` (append nothing: the exporter adds `/v1/metrics`). */
  baseUrl: string;
  /** Every request received, including failed and hung ones. */
  received: ReceivedExport[];
  /** Changes how later requests are answered. */
  setMode(mode: ReceiverMode): void;
  /** Resolves once `count` requests have arrived (rejects after `timeoutMs`). */
  waitFor(count: number, timeoutMs?: number): Promise<void>;
  /** Releases hung requests and stops the server. */
  close(): Promise<void>;
}

/** Starts a receiver on 127.0.0.1, port 0. */
export function startOtlpReceiver(mode: ReceiverMode = { kind: "ok" }): OtlpReceiver {
  const received: ReceivedExport[] = [];
  const hung = new Set<() => void>();
  const waiters: Array<{ count: number; resolve: () => void }> = [];
  let current = mode;
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (request) => {
      const text = await request.text();
      received.push({
        path: new URL(request.url).pathname,
        contentType: request.headers.get("content-type"),
        headers: request.headers,
        body: JSON.parse(text) as ExportRequest,
      });
      for (const waiter of [...waiters]) {
        if (received.length >= waiter.count) {
          waiters.splice(waiters.indexOf(waiter), 1);
          waiter.resolve();
        }
      }
      if (current.kind === "fail") {
        return new Response("collector says no", { status: current.status });
      }
      if (current.kind === "hang") {
        await new Promise<void>((resolve) => {
          const release = () => {
            hung.delete(release);
            resolve();
          };
          // Held until close(), even after the client gave up on it.
          hung.add(release);
        });
        return new Response(null, { status: 503 });
      }
      return Response.json({});
    },
  );
  return {
    baseUrl: `http://127.0.0.1:${server.addr.port}`,
    received,
    setMode(next) {
      current = next;
    },
    waitFor(count, timeoutMs = 5000) {
      if (received.length >= count) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(waiter), 1);
          reject(new Error(`only ${received.length} of ${count} exports after ${timeoutMs} ms`));
        }, timeoutMs);
        const waiter = {
          count,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        };
        waiters.push(waiter);
      });
    },
    async close() {
      for (const release of [...hung]) release();
      await server.shutdown();
    },
  };
}

/** A `KeyValue[]` as a plain record (ints as numbers). */
export function attributesOf(list: KeyValue[] | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const { key, value } of list ?? []) {
    out[key] = value.stringValue ??
      (value.intValue !== undefined
        ? Number(value.intValue)
        : value.doubleValue ?? value.boolValue);
  }
  return out;
}

/** The metric called `name` in the latest export that has it. */
export function latestMetric(received: ReceivedExport[], name: string): OtlpMetric | undefined {
  for (let i = received.length - 1; i >= 0; i--) {
    for (const resourceMetrics of received[i].body.resourceMetrics) {
      for (const scope of resourceMetrics.scopeMetrics) {
        const metric = scope.metrics.find((m) => m.name === name);
        if (metric !== undefined) return metric;
      }
    }
  }
  return undefined;
}

/** The numeric value of a sum/gauge data point. */
export function pointValue(point: NumberDataPoint): number {
  return point.asDouble ?? Number(point.asInt);
}

/** Data points whose attributes include every pair of `match`. */
export function pointsWhere<P extends { attributes?: KeyValue[] }>(
  points: P[],
  match: Record<string, unknown>,
): P[] {
  return points.filter((point) => {
    const attributes = attributesOf(point.attributes);
    return Object.entries(match).every(([key, value]) => attributes[key] === value);
  });
}
