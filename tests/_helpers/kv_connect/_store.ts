/**
 * The KV Connect operations carried out on a real Deno KV handle (a SQLite file).
 *
 * Keys: a client sends each key already encoded (the FoundationDB-style tuple encoding of
 * denoland/denokv `proto/codec.rs`), and read ranges as raw byte bounds (`prefix + 0x00` ..
 * `prefix + 0xff`, cursor-adjusted) that need not decode to any key. So each client key is
 * stored as the one-part key `[Uint8Array(encodedKey)]`. Deno KV encodes a bytes part as
 * `0x01`, the bytes with 0x00 escaped as `0x00 0xff`, and a `0x00` terminator, which preserves
 * byte order; so a client range [start, end) is exactly the native range
 * `[[start]], [[end]])`, with the native limit, reverse order, versionstamps, checks and
 * `expireIn`. Nothing is re-implemented, only translated.
 *
 * Values: `VE_V8` bytes are stored as a `Uint8Array` holding those bytes (kept byte for byte,
 * never deserialized), `VE_LE64` as a `Deno.KvU64` (so `sum`/`min`/`max` run natively), and
 * `VE_BYTES` wrapped as `{ bytes: Uint8Array }` to tell them apart from V8 bytes.
 *
 * Server bookkeeping (the database id) lives under a string-tagged key that sorts after every
 * bytes-tagged key, so no client range can reach it.
 *
 * @module
 */
import {
  type AtomicWrite,
  AtomicWriteStatus,
  type KvEntry,
  type KvValue,
  MutationType,
  type ReadRange,
  ValueEncoding,
  type WatchKeyOutput,
} from "./_messages.ts";

/** A request the server refuses with 400 (the client reports the message and gives up). */
export class BadRequestError extends Error {
  /** @param message the plain-text body of the 400 */
  constructor(message: string) {
    super(message);
    this.name = "BadRequestError";
  }
}

/** Where the server keeps its own records: outside every client range (see module doc). */
const META_ROOT = "kv-connect-test-server";

/** Limits of denoland/denokv `proto/limits.rs`, so a client sees what a real server enforces. */
export const LIMITS = {
  readRanges: 10,
  readEntries: 1000,
  checks: 10,
  mutations: 1000,
  watchedKeys: 10,
  keyBytes: 2048,
  valueBytes: 65536,
} as const;

const VERSIONSTAMP_BYTES = 10;

function nativeKey(clientKey: Uint8Array): Deno.KvKey {
  // A copy: the request body's buffer must not be kept alive (or changed) under KV.
  return [clientKey.slice()];
}

function clientKeyOf(key: Deno.KvKey): Uint8Array | null {
  return key.length === 1 && key[0] instanceof Uint8Array ? key[0] : null;
}

function hexToBytes(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let index = 0; index < out.length; index++) {
    out[index] = parseInt(hex.slice(index * 2, index * 2 + 2), 16);
  }
  return out;
}

function bytesToHex(bytes: Uint8Array): string {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const length = Math.min(a.length, b.length);
  for (let index = 0; index < length; index++) {
    if (a[index] !== b[index]) return a[index] - b[index];
  }
  return a.length - b.length;
}

function readLe64(data: Uint8Array): bigint {
  if (data.length !== 8) throw new BadRequestError("an LE64 value must be 8 bytes");
  return new DataView(data.buffer, data.byteOffset, 8).getBigUint64(0, true);
}

function writeLe64(value: bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, value, true);
  return out;
}

/** The native value that stands for a client value (see module doc). */
function toNative(value: KvValue): unknown {
  switch (value.encoding) {
    case ValueEncoding.V8:
      return value.data.slice();
    case ValueEncoding.LE64:
      return new Deno.KvU64(readLe64(value.data));
    case ValueEncoding.BYTES:
      return { bytes: value.data.slice() };
    default:
      throw new BadRequestError(`The value encoding ${value.encoding} is unknown.`);
  }
}

/** The client value a native value stands for. */
function fromNative(value: unknown): KvValue {
  if (value instanceof Uint8Array) return { data: value, encoding: ValueEncoding.V8 };
  if (value instanceof Deno.KvU64) {
    return { data: writeLe64(value.value), encoding: ValueEncoding.LE64 };
  }
  if (typeof value === "object" && value !== null && (value as { bytes?: unknown }).bytes) {
    const bytes = (value as { bytes: unknown }).bytes;
    if (bytes instanceof Uint8Array) return { data: bytes, encoding: ValueEncoding.BYTES };
  }
  // Only this server writes the file; anything else is a bug worth a loud 500.
  throw new Error(`unexpected value in the KV file: ${Deno.inspect(value)}`);
}

function toEntry(entry: Deno.KvEntry<unknown>): KvEntry | null {
  const key = clientKeyOf(entry.key);
  if (key === null) return null;
  return { key, ...fromNative(entry.value), versionstamp: hexToBytes(entry.versionstamp) };
}

/** Is this range a point read of one key (`start` .. `start + 0x00`, as `get`/`getMany` send)? */
function pointKey(range: ReadRange): Uint8Array | null {
  const { start, end } = range;
  if (end.length !== start.length + 1 || end[start.length] !== 0) return null;
  for (let index = 0; index < start.length; index++) {
    if (start[index] !== end[index]) return null;
  }
  return start;
}

/** The KV Connect operations on one Deno KV handle. */
export interface KvConnectStore {
  /** A stable id of the database (kept in the file, so it survives restarts). */
  databaseId(): Promise<string>;
  /** `snapshot_read`: the entries of each range, in order. */
  snapshotRead(ranges: readonly ReadRange[]): Promise<KvEntry[][]>;
  /** `atomic_write`: applies checks and mutations together. */
  atomicWrite(write: AtomicWrite): Promise<{ status: number; versionstamp?: Uint8Array }>;
  /**
   * `watch`: a stream of key states, the first with every key, then each change. Cancel it to
   * stop watching.
   */
  watch(keys: readonly Uint8Array[]): ReadableStream<WatchKeyOutput[]>;
}

/**
 * Wraps a Deno KV handle (the caller owns and closes it).
 *
 * @example
 * ```ts
 * const kv = await Deno.openKv("/tmp/kv-connect.sqlite");
 * const store = createKvConnectStore(kv);
 * const [[entry]] = await store.snapshotRead([{ start, end, limit: 1, reverse: false }]);
 * ```
 */
export function createKvConnectStore(kv: Deno.Kv): KvConnectStore {
  async function databaseId(): Promise<string> {
    const key = [META_ROOT, "database-id"];
    const existing = await kv.get<string>(key);
    if (typeof existing.value === "string") return existing.value;
    const fresh = crypto.randomUUID();
    // First writer wins; a concurrent first start reads the winner's id.
    await kv.atomic().check({ key, versionstamp: null }).set(key, fresh).commit();
    return (await kv.get<string>(key)).value ?? fresh;
  }

  async function snapshotRead(ranges: readonly ReadRange[]): Promise<KvEntry[][]> {
    if (ranges.length > LIMITS.readRanges) {
      throw new BadRequestError("Too many read ranges requested in one read request.");
    }
    let total = 0;
    for (const range of ranges) {
      if (range.limit <= 0) {
        throw new BadRequestError("The read range limit of the snapshot read request is invalid.");
      }
      if (range.start.length > LIMITS.keyBytes + 1 || range.end.length > LIMITS.keyBytes + 1) {
        throw new BadRequestError("A key exceeds the key size limit.");
      }
      total += range.limit;
    }
    if (total > LIMITS.readEntries) {
      throw new BadRequestError(
        "The total number of entries requested across read ranges in the read request is too large.",
      );
    }
    // `get` and `getMany` arrive as point ranges: one native getMany reads them all at one
    // snapshot, as the protocol promises. Other ranges are read one native `list` each.
    const points = ranges.map(pointKey);
    if (points.every((key) => key !== null)) {
      const entries = await kv.getMany(points.map((key) => nativeKey(key!)));
      return entries.map((entry) => {
        if (entry.versionstamp === null) return [];
        const converted = toEntry(entry);
        return converted === null ? [] : [converted];
      });
    }
    const out: KvEntry[][] = [];
    for (const range of ranges) {
      const entries: KvEntry[] = [];
      if (compareBytes(range.start, range.end) < 0) {
        const iterator = kv.list(
          { start: nativeKey(range.start), end: nativeKey(range.end) },
          { limit: range.limit, reverse: range.reverse, batchSize: Math.min(range.limit, 500) },
        );
        for await (const entry of iterator) {
          const converted = toEntry(entry);
          if (converted !== null) entries.push(converted);
        }
      }
      out.push(entries);
    }
    return out;
  }

  async function atomicWrite(
    write: AtomicWrite,
  ): Promise<{ status: number; versionstamp?: Uint8Array }> {
    if (write.enqueueCount > 0) {
      // Queues need a listener on the server side; KV Connect clients cannot listen anyway.
      throw new BadRequestError("Enqueue operations are not supported by this KV Connect server.");
    }
    if (write.checks.length > LIMITS.checks) {
      throw new BadRequestError("Too many checks included in atomic write.");
    }
    if (write.mutations.length > LIMITS.mutations) {
      throw new BadRequestError("Too many mutations / enqueues included in atomic write.");
    }
    const atomic = kv.atomic();
    for (const check of write.checks) {
      if (check.versionstamp.length !== 0 && check.versionstamp.length !== VERSIONSTAMP_BYTES) {
        throw new BadRequestError("Invalid versionstamp.");
      }
      atomic.check({
        key: nativeKey(check.key),
        versionstamp: check.versionstamp.length === 0 ? null : bytesToHex(check.versionstamp),
      });
    }
    const nowMs = Date.now();
    for (const mutation of write.mutations) {
      if (mutation.key.length > LIMITS.keyBytes) {
        throw new BadRequestError("A key exceeds the key size limit.");
      }
      if ((mutation.value?.data.length ?? 0) > LIMITS.valueBytes) {
        throw new BadRequestError("A value exceeds the value size limit.");
      }
      if (mutation.expireAtMs < -1n) throw new BadRequestError("Invalid mutation expire at.");
      const key = nativeKey(mutation.key);
      // The protocol carries an absolute time; the native API a delay. A time already past
      // still gets the shortest delay, so the entry expires rather than lives forever.
      const expireIn = mutation.expireAtMs > 0n
        ? Math.max(1, Number(mutation.expireAtMs) - nowMs)
        : undefined;
      switch (mutation.type) {
        case MutationType.SET:
          if (mutation.value === null) throw new BadRequestError("A set needs a value.");
          atomic.set(key, toNative(mutation.value), expireIn ? { expireIn } : undefined);
          break;
        case MutationType.DELETE:
          atomic.delete(key);
          break;
        case MutationType.SUM:
        case MutationType.MIN:
        case MutationType.MAX: {
          if (mutation.value?.encoding !== ValueEncoding.LE64) {
            throw new BadRequestError(
              "Only LE64 (Deno.KvU64) operands are supported by this KV Connect server.",
            );
          }
          const type = mutation.type === MutationType.SUM
            ? "sum"
            : mutation.type === MutationType.MIN
            ? "min"
            : "max";
          atomic.mutate({ type, key, value: new Deno.KvU64(readLe64(mutation.value.data)) });
          break;
        }
        default:
          throw new BadRequestError("Invalid mutation kind or arguments.");
      }
    }
    let result: Deno.KvCommitResult | Deno.KvCommitError;
    try {
      result = await atomic.commit();
    } catch (error) {
      // Deno KV refuses a sum/min/max on a value that is not a KvU64 with a TypeError: the
      // client's mistake (denokv answers it 400 too). Anything else is ours: 500.
      if (error instanceof TypeError && /non-U64|U64 value|mutation/i.test(error.message)) {
        throw new BadRequestError(error.message);
      }
      throw error;
    }
    if (!result.ok) return { status: AtomicWriteStatus.CHECK_FAILURE };
    return { status: AtomicWriteStatus.SUCCESS, versionstamp: hexToBytes(result.versionstamp) };
  }

  function watch(keys: readonly Uint8Array[]): ReadableStream<WatchKeyOutput[]> {
    if (keys.length > LIMITS.watchedKeys) {
      throw new BadRequestError("Too many keys watched in a single watch request.");
    }
    const copies = keys.map((key) => key.slice());
    const sent: (string | null | undefined)[] = copies.map(() => undefined);
    // Native watch sees every commit of this process, and this process is the only writer.
    return kv.watch(copies.map((key) => [key])).pipeThrough(
      new TransformStream<Deno.KvEntryMaybe<unknown>[], WatchKeyOutput[]>({
        transform(entries, controller) {
          // A frame goes out only when some key's versionstamp moved, and it carries every key
          // as `changed`: Deno 2.9.6's client reads `changed: false` as "the key is gone"
          // (measured: an unchanged key came back as null), and a key marked changed with the
          // value the client already has is filtered out by the client's versionstamp check.
          const anyChanged = entries.some((entry, index) => sent[index] !== entry.versionstamp);
          if (!anyChanged) return;
          const outputs = entries.map((entry, index): WatchKeyOutput => {
            sent[index] = entry.versionstamp;
            if (entry.versionstamp === null) return { changed: true, entry: null };
            return {
              changed: true,
              entry: {
                key: copies[index],
                ...fromNative(entry.value),
                versionstamp: hexToBytes(entry.versionstamp),
              },
            };
          });
          controller.enqueue(outputs);
        },
      }),
    );
  }

  return { databaseId, snapshotRead, atomicWrite, watch };
}
