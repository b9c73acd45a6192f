/**
 * The OTLP/HTTP protobuf encoding of finished spans (`ExportTraceServiceRequest`), byte for
 * byte what `ProtobufTraceSerializer` of `@opentelemetry/otlp-transformer` writes, written once.
 *
 * Why it exists: with every request sampled, the official serializer was the largest single
 * cost tracing added to a request (about a fifth of it under wrk). It walks every span twice
 * (a size-estimating pass, then the writing pass), reads every string twice in each pass (an
 * ASCII check, then the copy), and allocates a `Uint8Array` per trace, span and parent id
 * (`hexToBinary`) in both passes. This one mirrors its code field by field —
 * `otlp-transformer/src/trace/protobuf/trace-serializer.ts`,
 * `src/common/protobuf/common-serializer.ts` and `src/common/protobuf/protobuf-writer.ts`
 * (0.301.0): the same fields in the same order, the same one-byte length reservation that is
 * widened when a message outgrows it, the same varint, fixed64 and hrtime arithmetic — but
 * writes each `Span` message once (no estimating pass), copies each string once (falling back
 * to `TextEncoder` when it is not ASCII), writes ids straight from their hex, and keeps the
 * encoded attribute keys (a handful of constant strings).
 *
 * One writer, two steps: {@link createSpanBatchEncoder} writes `Span` messages (as spans end,
 * for the encoded span processor, or all at once), and {@link createEncodedTraceSerializer}
 * writes the resource and scope envelope around those bytes. {@link createProtobufTraceSerializer}
 * is the two in a row, for an exporter that is handed span objects; the JSON protocol keeps the
 * official serializer. `tests/telemetry/otlp_trace_protobuf_test.ts` checks the bytes against the official
 * serializer's and decodes them with the opentelemetry-proto definitions.
 *
 * @module
 */
import type { Attributes, AttributeValue, HrTime, Link, SpanContext } from "@opentelemetry/api";
import { type ISerializer, ProtobufTraceSerializer } from "@opentelemetry/otlp-transformer";
import type { Resource } from "@opentelemetry/resources";
import type { ReadableSpan, TimedEvent } from "@opentelemetry/sdk-trace";

/** Wire types (protobuf encoding): varint, 64-bit, length-delimited, 32-bit. */
const VARINT = 0;
const I64 = 1;
const LEN = 2;
const I32 = 5;
/** SpanFlags (trace.proto): the context's "is remote" is known, and it is remote. */
const SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK = 0x100;
const SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK = 0x200;
/** Bytes reserved for a nested message's length before it is known (the official writer's). */
const RESERVED_LENGTH_BYTES = 1;
/** The first buffer; it grows by doubling and is kept for the next export. */
const INITIAL_BUFFER_BYTES = 64 * 1024;
/** A buffer grown past this is dropped after the export (one huge batch does not pin it). */
const KEPT_BUFFER_MAX_BYTES = 8 * 1024 * 1024;
/** Distinct attribute keys whose encoding is kept; past it the memory starts over. */
const KEY_CACHE_ENTRIES = 256;
const MIN_64_BIT_INT = -(2 ** 63);
const MAX_64_BIT_INT = 2 ** 63;

function varintSize(value: number): number {
  if (value < 0) return 10;
  if (value < 0x80) return 1;
  if (value < 0x4000) return 2;
  if (value < 0x200000) return 3;
  if (value < 0x10000000) return 4;
  if (value <= 0xffffffff) return 5;
  return 10;
}

function hexValue(code: number): number {
  // As otlp-transformer's hexToBinary: digits, lower-case, anything else as upper-case.
  if (code >= 48 && code <= 57) return code - 48;
  if (code >= 97 && code <= 102) return code - 87;
  return code - 55;
}

/** A protobuf writer over one growable buffer (the official `ProtobufWriter`'s encoding). */
class Writer {
  buffer: Uint8Array = new Uint8Array(INITIAL_BUFFER_BYTES);
  view: DataView = new DataView(this.buffer.buffer);
  pos = 0;
  readonly encoder = new TextEncoder();
  readonly keys = new Map<string, Uint8Array>();

  ensure(size: number): void {
    const needed = this.pos + size;
    if (needed <= this.buffer.length) return;
    let length = this.buffer.length * 2;
    while (length < needed) length *= 2;
    const grown = new Uint8Array(length);
    grown.set(this.buffer.subarray(0, this.pos));
    this.buffer = grown;
    this.view = new DataView(grown.buffer);
  }

  /** The bytes written, copied out, and the buffer rewound for the next export. */
  take(): Uint8Array {
    const out = this.buffer.slice(0, this.pos);
    this.pos = 0;
    if (this.buffer.length > KEPT_BUFFER_MAX_BYTES) {
      this.buffer = new Uint8Array(INITIAL_BUFFER_BYTES);
      this.view = new DataView(this.buffer.buffer);
    }
    return out;
  }

  varint(value: number): void {
    this.ensure(10);
    const buffer = this.buffer;
    if (value >= 0 && value <= 0xffffffff) {
      let v = value >>> 0;
      while (v > 127) {
        buffer[this.pos++] = (v & 127) | 128;
        v >>>= 7;
      }
      buffer[this.pos++] = v;
      return;
    }
    // 64-bit two's complement, as the official writer (negative ints take ten bytes).
    let low: number;
    let high: number;
    if (value >= 0) {
      low = value >>> 0;
      high = (value / 4294967296) >>> 0;
    } else {
      const abs = Math.abs(value);
      low = ~(abs >>> 0) >>> 0;
      high = ~((abs / 4294967296) >>> 0) >>> 0;
      low = (low + 1) >>> 0;
      if (low === 0) high = (high + 1) >>> 0;
    }
    while (high > 0 || low > 127) {
      buffer[this.pos++] = (low & 127) | 128;
      low = ((low >>> 7) | (high << 25)) >>> 0;
      high >>>= 7;
    }
    buffer[this.pos++] = low & 127;
  }

  tag(field: number, wireType: number): void {
    this.varint((field << 3) | wireType);
  }

  fixed32(value: number): void {
    this.ensure(4);
    this.view.setUint32(this.pos, value >>> 0, true);
    this.pos += 4;
  }

  fixed64(low: number, high: number): void {
    this.ensure(8);
    this.view.setUint32(this.pos, low >>> 0, true);
    this.view.setUint32(this.pos + 4, high >>> 0, true);
    this.pos += 8;
  }

  double(value: number): void {
    this.ensure(8);
    this.view.setFloat64(this.pos, value, true);
    this.pos += 8;
  }

  /** Bytes already encoded (no length prefix). */
  raw(bytes: Uint8Array): void {
    this.ensure(bytes.length);
    this.buffer.set(bytes, this.pos);
    this.pos += bytes.length;
  }

  bytes(bytes: Uint8Array): void {
    this.varint(bytes.length);
    this.ensure(bytes.length);
    this.buffer.set(bytes, this.pos);
    this.pos += bytes.length;
  }

  /** A length-prefixed string: ASCII copied as it is read, anything else through TextEncoder. */
  string(value: string): void {
    const length = value.length;
    this.varint(length);
    this.ensure(length);
    const start = this.pos;
    const buffer = this.buffer;
    for (let i = 0; i < length; i++) {
      const code = value.charCodeAt(i);
      if (code > 127) {
        this.pos = start - varintSize(length);
        this.bytes(this.encoder.encode(value));
        return;
      }
      buffer[start + i] = code;
    }
    this.pos = start + length;
  }

  /** Hex digits as the bytes they spell, length-prefixed (an id as `bytes`). */
  hexBytes(hex: string): void {
    const length = hex.length >>> 1;
    this.varint(length);
    this.ensure(length);
    const buffer = this.buffer;
    for (let i = 0; i < length; i++) {
      buffer[this.pos++] = (hexValue(hex.charCodeAt(2 * i)) << 4) |
        hexValue(hex.charCodeAt(2 * i + 1));
    }
  }

  /** `KeyValue.key` (field 1) with its tag, from the kept encodings. */
  key(key: string): void {
    let encoded = this.keys.get(key);
    if (encoded === undefined) {
      const start = this.pos;
      this.tag(1, LEN);
      this.string(key);
      encoded = this.buffer.slice(start, this.pos);
      this.pos = start;
      if (this.keys.size >= KEY_CACHE_ENTRIES) this.keys.clear();
      this.keys.set(key, encoded);
    }
    this.ensure(encoded.length);
    this.buffer.set(encoded, this.pos);
    this.pos += encoded.length;
  }

  startLengthDelimited(): number {
    this.ensure(RESERVED_LENGTH_BYTES);
    const at = this.pos;
    this.pos += RESERVED_LENGTH_BYTES;
    return at;
  }

  /** Writes the length of the message that started at `at`, widening its slot if needed. */
  finishLengthDelimited(at: number): void {
    const length = this.pos - at - RESERVED_LENGTH_BYTES;
    const size = varintSize(length);
    if (size > RESERVED_LENGTH_BYTES) {
      const extra = size - RESERVED_LENGTH_BYTES;
      this.ensure(extra);
      this.buffer.copyWithin(at + size, at + RESERVED_LENGTH_BYTES, this.pos);
      this.pos += extra;
    }
    const buffer = this.buffer;
    let v = length;
    let write = at;
    while (v > 127) {
      buffer[write++] = (v & 127) | 128;
      v >>>= 7;
    }
    buffer[write] = v;
  }
}

/** `HrTime` as nanoseconds in a fixed64, with common-serializer's exact integer arithmetic. */
function writeHrTime(writer: Writer, time: HrTime): void {
  const seconds = time[0];
  const nanos = time[1];
  const nanosPerSecond = 1e9;
  const secondsLower16Bits = seconds & 0xffff;
  const secondsUpperBits = (seconds / 65536) >>> 0;
  const nanosFromLower16Bits = secondsLower16Bits * nanosPerSecond;
  const nanosFromUpperBits = secondsUpperBits * nanosPerSecond;
  const lower16ContributionLow32 = nanosFromLower16Bits >>> 0;
  const lower16ContributionHigh32 = Math.floor(nanosFromLower16Bits / 4294967296);
  const upperBitsContributionLow32 = ((nanosFromUpperBits & 0xffff) * 65536) >>> 0;
  const upperBitsContributionHigh32 = (nanosFromUpperBits / 65536) >>> 0;
  const low32WithCarry = lower16ContributionLow32 + upperBitsContributionLow32 + nanos;
  const totalLow = low32WithCarry >>> 0;
  const carry = Math.floor(low32WithCarry / 4294967296);
  const totalHigh = (lower16ContributionHigh32 + upperBitsContributionHigh32 + carry) >>> 0;
  writer.fixed64(totalLow, totalHigh);
}

/** `AnyValue` (common.proto), as common-serializer's writeAnyValue. */
function writeAnyValue(writer: Writer, value: unknown): void {
  if (typeof value === "string") {
    writer.tag(1, LEN);
    writer.string(value);
  } else if (typeof value === "boolean") {
    writer.tag(2, VARINT);
    writer.varint(value ? 1 : 0);
  } else if (typeof value === "number") {
    if (Number.isInteger(value) && value >= MIN_64_BIT_INT && value < MAX_64_BIT_INT) {
      writer.tag(3, VARINT);
      writer.varint(value);
    } else {
      writer.tag(4, I64);
      writer.double(value);
    }
  } else if (value instanceof Uint8Array) {
    writer.tag(7, LEN);
    writer.bytes(value);
  } else if (Array.isArray(value)) {
    writer.tag(5, LEN);
    const array = writer.startLengthDelimited();
    for (const item of value) {
      writer.tag(1, LEN);
      const itemStart = writer.startLengthDelimited();
      writeAnyValue(writer, item);
      writer.finishLengthDelimited(itemStart);
    }
    writer.finishLengthDelimited(array);
  } else if (typeof value === "object" && value !== null) {
    writer.tag(6, LEN);
    const list = writer.startLengthDelimited();
    const record = value as Record<string, unknown>;
    for (const key in record) {
      if (!Object.prototype.hasOwnProperty.call(record, key)) continue;
      writer.tag(1, LEN);
      const pair = writer.startLengthDelimited();
      writer.tag(1, LEN);
      writer.string(key);
      writer.tag(2, LEN);
      const inner = writer.startLengthDelimited();
      writeAnyValue(writer, record[key]);
      writer.finishLengthDelimited(inner);
      writer.finishLengthDelimited(pair);
    }
    writer.finishLengthDelimited(list);
  }
}

/** Repeated `KeyValue` in `field`, as common-serializer's writeAttributes. */
function writeAttributes(writer: Writer, attributes: Attributes, field: number): void {
  for (const key in attributes) {
    if (!Object.prototype.hasOwnProperty.call(attributes, key)) continue;
    writer.tag(field, LEN);
    const pair = writer.startLengthDelimited();
    writer.key(key);
    writer.tag(2, LEN);
    const value = writer.startLengthDelimited();
    writeAnyValue(writer, attributes[key] as AttributeValue | undefined);
    writer.finishLengthDelimited(value);
    writer.finishLengthDelimited(pair);
  }
}

function spanFlags(traceFlags: number, isRemote: boolean | undefined): number {
  let flags = (traceFlags & 0xff) | SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK;
  if (isRemote) flags |= SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK;
  return flags;
}

function writeEvent(writer: Writer, event: TimedEvent): void {
  const start = writer.startLengthDelimited();
  writer.tag(1, I64);
  writeHrTime(writer, event.time);
  writer.tag(2, LEN);
  writer.string(event.name);
  if (event.attributes) writeAttributes(writer, event.attributes, 3);
  writer.tag(4, VARINT);
  writer.varint(event.droppedAttributesCount || 0);
  writer.finishLengthDelimited(start);
}

/**
 * Fields 1-3 shared by `Span` and `Span.Link`: trace id, span id (bytes from their hex) and the
 * W3C trace state, when there is one.
 */
function writeContext(writer: Writer, context: SpanContext): void {
  writer.tag(1, LEN);
  writer.hexBytes(context.traceId);
  writer.tag(2, LEN);
  writer.hexBytes(context.spanId);
  const traceState = context.traceState?.serialize();
  if (traceState) {
    writer.tag(3, LEN);
    writer.string(traceState);
  }
}

function writeLink(writer: Writer, link: Link): void {
  const start = writer.startLengthDelimited();
  const context: SpanContext = link.context;
  writeContext(writer, context);
  if (link.attributes) writeAttributes(writer, link.attributes, 4);
  writer.tag(5, VARINT);
  writer.varint(link.droppedAttributesCount || 0);
  const flags = spanFlags(context.traceFlags, context.isRemote);
  if (flags) {
    writer.tag(6, I32);
    writer.fixed32(flags);
  }
  writer.finishLengthDelimited(start);
}

/** One `Span` (trace.proto fields 1-16), as trace-serializer's serializeSpan. */
function writeSpan(writer: Writer, span: ReadableSpan): void {
  const start = writer.startLengthDelimited();
  const context = span.spanContext();
  writeContext(writer, context);
  const parent = span.parentSpanContext;
  if (parent?.spanId) {
    writer.tag(4, LEN);
    writer.hexBytes(parent.spanId);
  }
  writer.tag(5, LEN);
  writer.string(span.name);
  // SpanKind in the API counts from INTERNAL = 0; the proto reserves 0 for UNSPECIFIED.
  const kind = span.kind == null ? 0 : span.kind + 1;
  if (kind !== 0) {
    writer.tag(6, VARINT);
    writer.varint(kind);
  }
  writer.tag(7, I64);
  writeHrTime(writer, span.startTime);
  writer.tag(8, I64);
  writeHrTime(writer, span.endTime);
  if (span.attributes) writeAttributes(writer, span.attributes, 9);
  writer.tag(10, VARINT);
  writer.varint(span.droppedAttributesCount);
  for (const event of span.events) {
    writer.tag(11, LEN);
    writeEvent(writer, event);
  }
  writer.tag(12, VARINT);
  writer.varint(span.droppedEventsCount);
  for (const link of span.links) {
    writer.tag(13, LEN);
    writeLink(writer, link);
  }
  writer.tag(14, VARINT);
  writer.varint(span.droppedLinksCount);
  writer.tag(15, LEN);
  const status = writer.startLengthDelimited();
  if (span.status.message) {
    writer.tag(2, LEN);
    writer.string(span.status.message);
  }
  writer.tag(3, VARINT);
  writer.varint(span.status.code);
  writer.finishLengthDelimited(status);
  const flags = spanFlags(context.traceFlags, parent?.isRemote);
  if (flags) {
    writer.tag(16, I32);
    writer.fixed32(flags);
  }
  writer.finishLengthDelimited(start);
}

type Scope = ReadableSpan["instrumentationScope"];

/** ScopeSpans field 1: the `InstrumentationScope`. */
function writeScope(writer: Writer, scope: Scope): void {
  writer.tag(1, LEN);
  const scopeStart = writer.startLengthDelimited();
  writer.tag(1, LEN);
  writer.string(scope.name);
  if (scope.version) {
    writer.tag(2, LEN);
    writer.string(scope.version);
  }
  // The official writer also writes the scope's attributes and dropped count when the scope
  // object carries them (the API's InstrumentationScope type does not declare them).
  const extra = scope as Scope & { attributes?: Attributes; droppedAttributesCount?: number };
  if (extra.attributes) writeAttributes(writer, extra.attributes, 3);
  if (extra.droppedAttributesCount) {
    writer.tag(4, VARINT);
    writer.varint(extra.droppedAttributesCount);
  }
  writer.finishLengthDelimited(scopeStart);
}

/** ResourceSpans field 1: the `Resource`. */
function writeResource(writer: Writer, resource: Resource): void {
  writer.tag(1, LEN);
  const resourceStart = writer.startLengthDelimited();
  if (resource.attributes) writeAttributes(writer, resource.attributes, 1);
  writer.tag(2, VARINT);
  writer.varint(0);
  writer.finishLengthDelimited(resourceStart);
}

/** A run of consecutive spans with the same resource and scope: a byte range of a batch. */
interface EncodedRun {
  resource: Resource;
  scope: Scope;
  start: number;
  end: number;
}

/**
 * Spans encoded when they ended: each one's `ScopeSpans.spans` field (tag and `Span` message)
 * back to back in `bytes`, with the runs of spans sharing a resource and scope. Holding these
 * instead of the spans lets a span and its attribute objects die right after `end()`, in V8's
 * young generation, instead of living until their batch is exported.
 */
export interface EncodedSpanBatch {
  /** The encoded spans, in the order they ended. */
  readonly bytes: Uint8Array;
  /** Runs of spans with one resource and scope, in order. */
  readonly runs: readonly EncodedRun[];
  /** How many spans. */
  readonly count: number;
}

/** Encodes spans as they end into an open batch ({@link createSpanBatchEncoder}). */
export interface SpanBatchEncoder {
  /** Spans in the open batch. */
  readonly count: number;
  /** Encodes `span` into the open batch; on a throw the batch is as it was. */
  add(span: ReadableSpan): void;
  /** Closes the open batch (its bytes copied out) and starts an empty one. */
  take(): EncodedSpanBatch;
}

/**
 * Creates an encoder that writes each ended span's `Span` message (as the one-pass serializer
 * does) into one kept buffer; {@link createEncodedTraceSerializer} wraps a batch into the
 * `ExportTraceServiceRequest` the official serializer would write for the same spans.
 *
 * @example
 * ```ts
 * const encoder = createSpanBatchEncoder();
 * encoder.add(span); // in a span processor's onEnd
 * const bytes = createEncodedTraceSerializer().serializeRequest(encoder.take());
 * ```
 */
export function createSpanBatchEncoder(): SpanBatchEncoder {
  const writer = new Writer();
  let runs: EncodedRun[] = [];
  let count = 0;
  return {
    get count() {
      return count;
    },
    add(span) {
      const start = writer.pos;
      try {
        writer.tag(2, LEN);
        writeSpan(writer, span);
      } catch (error) {
        writer.pos = start;
        throw error;
      }
      const last = runs.length === 0 ? undefined : runs[runs.length - 1];
      if (
        last !== undefined && last.resource === span.resource &&
        last.scope === span.instrumentationScope
      ) {
        last.end = writer.pos;
      } else {
        runs.push({
          resource: span.resource,
          scope: span.instrumentationScope,
          start,
          end: writer.pos,
        });
      }
      count++;
    },
    take() {
      const batch = { bytes: writer.take(), runs, count };
      runs = [];
      count = 0;
      return batch;
    },
  };
}

/**
 * Creates the serializer that wraps an {@link EncodedSpanBatch} into an
 * `ExportTraceServiceRequest`: runs grouped by resource, then scope, by identity and in
 * first-seen order, as the official serializer groups spans, so the bytes are the same.
 *
 * @example
 * ```ts
 * const serializer = createEncodedTraceSerializer();
 * const body = serializer.serializeRequest(encoder.take());
 * ```
 */
export function createEncodedTraceSerializer(): ISerializer<EncodedSpanBatch, unknown> {
  const writer = new Writer();
  return {
    serializeRequest(batch) {
      try {
        const resources = new Map<Resource, Map<Scope, EncodedRun[]>>();
        for (const run of batch.runs) {
          let scopes = resources.get(run.resource);
          if (scopes === undefined) {
            scopes = new Map();
            resources.set(run.resource, scopes);
          }
          let list = scopes.get(run.scope);
          if (list === undefined) {
            list = [];
            scopes.set(run.scope, list);
          }
          list.push(run);
        }
        for (const [resource, scopes] of resources) {
          writer.tag(1, LEN);
          const start = writer.startLengthDelimited();
          writeResource(writer, resource);
          for (const [scope, list] of scopes) {
            writer.tag(2, LEN);
            const scopeStart = writer.startLengthDelimited();
            writeScope(writer, scope);
            for (const run of list) writer.raw(batch.bytes.subarray(run.start, run.end));
            if (scope.schemaUrl) {
              writer.tag(3, LEN);
              writer.string(scope.schemaUrl);
            }
            writer.finishLengthDelimited(scopeStart);
          }
          if (resource.schemaUrl) {
            writer.tag(3, LEN);
            writer.string(resource.schemaUrl);
          }
          writer.finishLengthDelimited(start);
        }
        return writer.take();
      } catch (error) {
        writer.pos = 0;
        throw error;
      }
    },
    deserializeResponse: (data) => ProtobufTraceSerializer.deserializeResponse(data),
  };
}

/**
 * Creates a protobuf trace serializer for the OTLP export delegate over span objects: the spans
 * encoded by a {@link createSpanBatchEncoder} and wrapped by a
 * {@link createEncodedTraceSerializer}, so the two ways to the bytes share one writer; responses
 * are decoded by the official serializer.
 *
 * @example
 * ```ts
 * const serializer = createProtobufTraceSerializer();
 * const bytes = serializer.serializeRequest(spans); // === ProtobufTraceSerializer's bytes
 * ```
 */
export function createProtobufTraceSerializer(): ISerializer<ReadableSpan[], unknown> {
  const encoder = createSpanBatchEncoder();
  const envelope = createEncodedTraceSerializer();
  return {
    serializeRequest(spans) {
      try {
        for (const span of spans) encoder.add(span);
      } catch (error) {
        encoder.take(); // the spans before the one that failed are not part of the next request
        throw error;
      }
      return envelope.serializeRequest(encoder.take());
    },
    deserializeResponse: envelope.deserializeResponse,
  };
}
