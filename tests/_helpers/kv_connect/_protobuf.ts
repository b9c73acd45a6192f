/**
 * The few protobuf wire primitives the KV Connect messages need (protobuf "Encoding" guide,
 * protobuf.dev/programming-guides/encoding): base-128 varints (wire type 0) and length-delimited
 * fields (wire type 2). Other wire types are skipped when reading, never written. Hand-written so
 * the test server adds no dependency.
 *
 * @module
 */

/** Wire type 0: int32, int64, uint32, bool, enum. */
export const WIRE_VARINT = 0;
/** Wire type 1: fixed64, sfixed64, double (only ever skipped here). */
export const WIRE_FIXED64 = 1;
/** Wire type 2: bytes, string, embedded messages, packed repeated scalars. */
export const WIRE_LENGTH_DELIMITED = 2;
/** Wire type 5: fixed32, sfixed32, float (only ever skipped here). */
export const WIRE_FIXED32 = 5;

/** A malformed message: the server answers it with 400, as the KV Connect spec asks. */
export class ProtobufError extends Error {
  /** @param message what is wrong, for the 400 body */
  constructor(message: string) {
    super(message);
    this.name = "ProtobufError";
  }
}

/** One field as read off the wire. */
export interface WireField {
  /** The field number. */
  field: number;
  /** The wire type. */
  wireType: number;
  /** The value of a varint field (as a bigint: int64 values can exceed 2^53). */
  varint: bigint;
  /** The payload of a length-delimited field (a view into the input, not a copy). */
  bytes: Uint8Array;
}

/** Reads one varint at `cursor.offset` and moves the cursor past it. */
function readVarint(input: Uint8Array, cursor: { offset: number }): bigint {
  let result = 0n;
  for (let shift = 0n; shift < 70n; shift += 7n) {
    if (cursor.offset >= input.length) throw new ProtobufError("truncated varint");
    const byte = input[cursor.offset++];
    result |= BigInt(byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) return result;
  }
  throw new ProtobufError("varint longer than 10 bytes");
}

/**
 * Reads every top-level field of a message in order. Repeated fields simply occur several
 * times; the caller picks what it knows and ignores the rest (proto3 forward compatibility).
 */
export function readFields(input: Uint8Array): WireField[] {
  const fields: WireField[] = [];
  const cursor = { offset: 0 };
  while (cursor.offset < input.length) {
    const tag = readVarint(input, cursor);
    const field = Number(tag >> 3n);
    const wireType = Number(tag & 7n);
    if (field === 0) throw new ProtobufError("field number 0");
    const entry: WireField = { field, wireType, varint: 0n, bytes: new Uint8Array(0) };
    switch (wireType) {
      case WIRE_VARINT:
        entry.varint = readVarint(input, cursor);
        break;
      case WIRE_LENGTH_DELIMITED: {
        const length = Number(readVarint(input, cursor));
        if (cursor.offset + length > input.length) throw new ProtobufError("truncated field");
        entry.bytes = input.subarray(cursor.offset, cursor.offset + length);
        cursor.offset += length;
        break;
      }
      case WIRE_FIXED64:
        cursor.offset += 8;
        break;
      case WIRE_FIXED32:
        cursor.offset += 4;
        break;
      default:
        throw new ProtobufError(`unsupported wire type ${wireType}`);
    }
    if (cursor.offset > input.length) throw new ProtobufError("truncated field");
    fields.push(entry);
  }
  return fields;
}

/**
 * A varint field read as a signed 64-bit integer (int64/int32 are two's complement on the wire,
 * so -1 arrives as ten bytes).
 */
export function asInt64(value: bigint): bigint {
  return BigInt.asIntN(64, value);
}

/** The values of a `repeated uint32` field, packed (proto3's default) or not. */
export function readPackedVarints(fields: WireField[], field: number): bigint[] {
  const out: bigint[] = [];
  for (const entry of fields) {
    if (entry.field !== field) continue;
    if (entry.wireType === WIRE_VARINT) {
      out.push(entry.varint);
    } else if (entry.wireType === WIRE_LENGTH_DELIMITED) {
      // A packed run is the varints back to back, without tags.
      const cursor = { offset: 0 };
      while (cursor.offset < entry.bytes.length) out.push(readVarint(entry.bytes, cursor));
    }
  }
  return out;
}

/** Builds one message; fields are written in call order. */
export class MessageWriter {
  #chunks: number[] = [];

  #varint(value: bigint): void {
    // Negative int64 values are written as their unsigned 64-bit two's complement.
    let rest = BigInt.asUintN(64, value);
    while (rest >= 0x80n) {
      this.#chunks.push(Number(rest & 0x7fn) | 0x80);
      rest >>= 7n;
    }
    this.#chunks.push(Number(rest));
  }

  #tag(field: number, wireType: number): void {
    this.#varint(BigInt((field << 3) | wireType));
  }

  /** A varint field; proto3 leaves out a zero (the default), and so do we. */
  varint(field: number, value: number | bigint | boolean): this {
    const big = typeof value === "boolean" ? (value ? 1n : 0n) : BigInt(value);
    if (big === 0n) return this;
    this.#tag(field, WIRE_VARINT);
    this.#varint(big);
    return this;
  }

  /** A bytes or embedded-message field. Written even when empty only if `always`. */
  bytes(field: number, value: Uint8Array, always = false): this {
    if (value.length === 0 && !always) return this;
    this.#tag(field, WIRE_LENGTH_DELIMITED);
    this.#varint(BigInt(value.length));
    for (const byte of value) this.#chunks.push(byte);
    return this;
  }

  /** A packed `repeated uint32` field (proto3's default encoding for repeated scalars). */
  packedVarints(field: number, values: readonly number[]): this {
    if (values.length === 0) return this;
    const inner = new MessageWriter();
    for (const value of values) inner.#varint(BigInt(value));
    return this.bytes(field, inner.finish());
  }

  /** The encoded message. */
  finish(): Uint8Array<ArrayBuffer> {
    return Uint8Array.from(this.#chunks);
  }
}
