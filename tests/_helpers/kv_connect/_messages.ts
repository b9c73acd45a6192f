/**
 * The KV Connect data-path messages (`com.deno.kv.datapath`, denoland/denokv
 * `proto/schema/datapath.proto`): the three requests decoded, the three answers encoded. Only the
 * fields that schema defines; unknown fields are ignored, as proto3 readers do.
 *
 * @module
 */
import {
  asInt64,
  MessageWriter,
  ProtobufError,
  readFields,
  readPackedVarints,
  WIRE_LENGTH_DELIMITED,
  WIRE_VARINT,
  type WireField,
} from "./_protobuf.ts";

/** `ValueEncoding`: how a value's bytes are to be read. */
export const ValueEncoding = { V8: 1, LE64: 2, BYTES: 3 } as const;

/** `MutationType`. */
export const MutationType = {
  SET: 1,
  DELETE: 2,
  SUM: 3,
  MAX: 4,
  MIN: 5,
  SET_SUFFIX_VERSIONSTAMPED_KEY: 9,
} as const;

/** `SnapshotReadStatus` (also the status of a `WatchOutput`). */
export const SnapshotReadStatus = { SUCCESS: 1, READ_DISABLED: 2 } as const;

/** `AtomicWriteStatus`. */
export const AtomicWriteStatus = { SUCCESS: 1, CHECK_FAILURE: 2, WRITE_DISABLED: 5 } as const;

/** `ReadRange`: keys in [start, end), at most `limit`, optionally from the end. */
export interface ReadRange {
  /** First key (inclusive), as encoded by the client. */
  start: Uint8Array;
  /** End key (exclusive). */
  end: Uint8Array;
  /** How many entries at most (the spec requires a positive number). */
  limit: number;
  /** Newest-key-first. */
  reverse: boolean;
}

/** `KvValue`: bytes and how to read them. */
export interface KvValue {
  /** The raw value bytes. */
  data: Uint8Array;
  /** One of {@link ValueEncoding}. */
  encoding: number;
}

/** `KvEntry`: one stored entry. */
export interface KvEntry extends KvValue {
  /** The key, as the client encoded it. */
  key: Uint8Array;
  /** 10 bytes: the commit that last wrote it. */
  versionstamp: Uint8Array;
}

/** `Check`: the key must hold this versionstamp (empty: must not exist). */
export interface Check {
  /** The key. */
  key: Uint8Array;
  /** Empty or 10 bytes. */
  versionstamp: Uint8Array;
}

/** `Mutation`. */
export interface Mutation {
  /** The key. */
  key: Uint8Array;
  /** Absent for deletes (clients still send an empty one). */
  value: KvValue | null;
  /** One of {@link MutationType}. */
  type: number;
  /** Absolute expiry in epoch ms; 0 (or -1) means never. */
  expireAtMs: bigint;
  /** V8-encoded bounds of a V8 `sum`; empty when not given. */
  sumMin: Uint8Array;
  /** V8-encoded upper bound of a V8 `sum`. */
  sumMax: Uint8Array;
  /** Clamp a V8 `sum` into its bounds instead of failing. */
  sumClamp: boolean;
}

/** `AtomicWrite`. */
export interface AtomicWrite {
  /** Checks, all of which must hold. */
  checks: Check[];
  /** Mutations, applied together. */
  mutations: Mutation[];
  /** How many `Enqueue` messages came along (this server refuses queues). */
  enqueueCount: number;
}

function expect(entry: WireField, wireType: number, name: string): void {
  if (entry.wireType !== wireType) {
    throw new ProtobufError(`${name}: field ${entry.field} has wire type ${entry.wireType}`);
  }
}

function toInt32(value: bigint, name: string): number {
  const signed = BigInt.asIntN(32, value);
  if (BigInt.asIntN(64, value) !== signed) throw new ProtobufError(`${name}: not an int32`);
  return Number(signed);
}

function decodeReadRange(bytes: Uint8Array): ReadRange {
  const range: ReadRange = {
    start: new Uint8Array(0),
    end: new Uint8Array(0),
    limit: 0,
    reverse: false,
  };
  for (const entry of readFields(bytes)) {
    if (entry.field === 1) {
      expect(entry, WIRE_LENGTH_DELIMITED, "ReadRange.start");
      range.start = entry.bytes;
    } else if (entry.field === 2) {
      expect(entry, WIRE_LENGTH_DELIMITED, "ReadRange.end");
      range.end = entry.bytes;
    } else if (entry.field === 3) {
      expect(entry, WIRE_VARINT, "ReadRange.limit");
      range.limit = toInt32(entry.varint, "ReadRange.limit");
    } else if (entry.field === 4) {
      expect(entry, WIRE_VARINT, "ReadRange.reverse");
      range.reverse = entry.varint !== 0n;
    }
  }
  return range;
}

/** Decodes a `SnapshotRead` request body. */
export function decodeSnapshotRead(body: Uint8Array): ReadRange[] {
  return readFields(body)
    .filter((entry) => entry.field === 1)
    .map((entry) => {
      expect(entry, WIRE_LENGTH_DELIMITED, "SnapshotRead.ranges");
      return decodeReadRange(entry.bytes);
    });
}

function decodeKvValue(bytes: Uint8Array): KvValue {
  const value: KvValue = { data: new Uint8Array(0), encoding: 0 };
  for (const entry of readFields(bytes)) {
    if (entry.field === 1) {
      expect(entry, WIRE_LENGTH_DELIMITED, "KvValue.data");
      value.data = entry.bytes;
    } else if (entry.field === 2) {
      expect(entry, WIRE_VARINT, "KvValue.encoding");
      value.encoding = Number(entry.varint);
    }
  }
  return value;
}

function decodeCheck(bytes: Uint8Array): Check {
  const check: Check = { key: new Uint8Array(0), versionstamp: new Uint8Array(0) };
  for (const entry of readFields(bytes)) {
    if (entry.field === 1) {
      expect(entry, WIRE_LENGTH_DELIMITED, "Check.key");
      check.key = entry.bytes;
    } else if (entry.field === 2) {
      expect(entry, WIRE_LENGTH_DELIMITED, "Check.versionstamp");
      check.versionstamp = entry.bytes;
    }
  }
  return check;
}

function decodeMutation(bytes: Uint8Array): Mutation {
  const mutation: Mutation = {
    key: new Uint8Array(0),
    value: null,
    type: 0,
    expireAtMs: 0n,
    sumMin: new Uint8Array(0),
    sumMax: new Uint8Array(0),
    sumClamp: false,
  };
  for (const entry of readFields(bytes)) {
    switch (entry.field) {
      case 1:
        expect(entry, WIRE_LENGTH_DELIMITED, "Mutation.key");
        mutation.key = entry.bytes;
        break;
      case 2:
        expect(entry, WIRE_LENGTH_DELIMITED, "Mutation.value");
        mutation.value = decodeKvValue(entry.bytes);
        break;
      case 3:
        expect(entry, WIRE_VARINT, "Mutation.mutation_type");
        mutation.type = Number(entry.varint);
        break;
      case 4:
        expect(entry, WIRE_VARINT, "Mutation.expire_at_ms");
        mutation.expireAtMs = asInt64(entry.varint);
        break;
      case 5:
        expect(entry, WIRE_LENGTH_DELIMITED, "Mutation.sum_min");
        mutation.sumMin = entry.bytes;
        break;
      case 6:
        expect(entry, WIRE_LENGTH_DELIMITED, "Mutation.sum_max");
        mutation.sumMax = entry.bytes;
        break;
      case 7:
        expect(entry, WIRE_VARINT, "Mutation.sum_clamp");
        mutation.sumClamp = entry.varint !== 0n;
        break;
    }
  }
  return mutation;
}

/** Decodes an `AtomicWrite` request body. */
export function decodeAtomicWrite(body: Uint8Array): AtomicWrite {
  const write: AtomicWrite = { checks: [], mutations: [], enqueueCount: 0 };
  for (const entry of readFields(body)) {
    if (entry.field === 1) {
      expect(entry, WIRE_LENGTH_DELIMITED, "AtomicWrite.checks");
      write.checks.push(decodeCheck(entry.bytes));
    } else if (entry.field === 2) {
      expect(entry, WIRE_LENGTH_DELIMITED, "AtomicWrite.mutations");
      write.mutations.push(decodeMutation(entry.bytes));
    } else if (entry.field === 3) {
      expect(entry, WIRE_LENGTH_DELIMITED, "AtomicWrite.enqueues");
      // Parsed only to reject a malformed one with the right message; the content is unused.
      const enqueue = readFields(entry.bytes);
      readPackedVarints(enqueue, 4);
      write.enqueueCount++;
    }
  }
  return write;
}

/** Decodes a `Watch` request body into its keys. */
export function decodeWatch(body: Uint8Array): Uint8Array[] {
  return readFields(body)
    .filter((entry) => entry.field === 1)
    .map((entry) => {
      expect(entry, WIRE_LENGTH_DELIMITED, "Watch.keys");
      const key = readFields(entry.bytes).find((field) => field.field === 1);
      if (key !== undefined) expect(key, WIRE_LENGTH_DELIMITED, "WatchKey.key");
      return key?.bytes ?? new Uint8Array(0);
    });
}

function encodeKvEntry(entry: KvEntry): Uint8Array {
  return new MessageWriter()
    .bytes(1, entry.key, true)
    .bytes(2, entry.data)
    .varint(3, entry.encoding)
    .bytes(4, entry.versionstamp)
    .finish();
}

/** Encodes a successful `SnapshotReadOutput`: one list of entries per requested range. */
export function encodeSnapshotReadOutput(ranges: readonly KvEntry[][]): Uint8Array<ArrayBuffer> {
  const writer = new MessageWriter();
  for (const entries of ranges) {
    const range = new MessageWriter();
    for (const entry of entries) range.bytes(1, encodeKvEntry(entry), true);
    // An empty range must still be present: the client matches ranges by position.
    writer.bytes(1, range.finish(), true);
  }
  return writer
    .varint(2, false) // read_disabled
    .varint(4, true) // read_is_strongly_consistent: one server, one file
    .varint(8, SnapshotReadStatus.SUCCESS)
    .finish();
}

/** Encodes an `AtomicWriteOutput`. */
export function encodeAtomicWriteOutput(
  output: { status: number; versionstamp?: Uint8Array; failedChecks?: readonly number[] },
): Uint8Array<ArrayBuffer> {
  return new MessageWriter()
    .varint(1, output.status)
    .bytes(2, output.versionstamp ?? new Uint8Array(0))
    .packedVarints(4, output.failedChecks ?? [])
    .finish();
}

/** One key of a `WatchOutput`: unchanged, or changed to `entry` (null: deleted / absent). */
export type WatchKeyOutput = { changed: false } | { changed: true; entry: KvEntry | null };

/** Encodes a `WatchOutput` with status SR_SUCCESS. */
export function encodeWatchOutput(keys: readonly WatchKeyOutput[]): Uint8Array<ArrayBuffer> {
  const writer = new MessageWriter().varint(1, SnapshotReadStatus.SUCCESS);
  for (const key of keys) {
    const inner = new MessageWriter().varint(1, key.changed);
    if (key.changed && key.entry !== null) inner.bytes(2, encodeKvEntry(key.entry), true);
    writer.bytes(2, inner.finish(), true);
  }
  return writer.finish();
}
