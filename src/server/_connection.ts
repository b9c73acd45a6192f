/**
 * One accepted client connection: the socket, the bytes read ahead of the parser, and the
 * phase the timeout sweep looks at. At most one socket read is outstanding at any time, so
 * the head parser, the request body and the "client gone" watch never race for bytes.
 *
 * @module
 */

/** Opened, no byte yet: `headerTimeoutMs` from the accept, then closed silently. */
export const PHASE_NEW = 0;
/** Keep-alive between requests, no byte yet: `idleTimeoutMs`, then closed silently. */
export const PHASE_IDLE = 1;
/** Part of a head arrived: `headerTimeoutMs` from its first byte, then 408. */
export const PHASE_HEAD = 2;
/** A request is being handled or its response written: no server timeout. */
export const PHASE_ACTIVE = 3;
/** Closing after a last response: reads are discarded until the peer closes or time is up. */
export const PHASE_LINGER = 4;
/** Taken over by the handler after its request (`Upgrade`): no server timeout, no server writes. */
export const PHASE_TAKEN = 5;

/**
 * The initial read-ahead buffer: most request heads fit (it grows for bigger ones, and shrinks
 * back between requests), and each idle connection keeps a read posted into it.
 */
const INITIAL_INPUT_BYTES = 2048;

/** {@link Connection.readInto}: append to the read-ahead buffer. */
export const INTO_INPUT = 0;
/** {@link Connection.readInto}: append to the read-ahead buffer and keep watching. */
export const INTO_INPUT_WATCHING = 1;
/** {@link Connection.readInto}: the bytes stay in the caller's view. */
export const INTO_VIEW = 2;

/** An accepted connection. */
export class Connection {
  readonly conn: Deno.TcpConn;
  readonly remoteAddr: Deno.NetAddr;
  /** Read-ahead bytes are `input[start, end)`. */
  input: Uint8Array = new Uint8Array(INITIAL_INPUT_BYTES);
  start = 0;
  end = 0;
  /** One of the PHASE_* values. */
  phase = PHASE_NEW;
  /** When the phase's timer started (the server's clock). */
  phaseSince: number;
  /** When a request body read started waiting on the socket, or -1. */
  bodyWaitSince = -1;
  /** Set by the sweep when the phase's time is up; the owner of the socket acts on it. */
  timedOut = false;
  /** Set by the sweep when a request body read waited `bodyIdleTimeoutMs` for a byte. */
  bodyTimedOut = false;
  /** The peer closed its side, or a read failed. */
  eof = false;
  /** The socket is closed. */
  closed = false;
  /** Requests started on this connection. */
  requests = 0;
  /** Called once when a read sees EOF or an error (the client went away). */
  onPeerGone: (() => void) | null = null;
  /** Bytes the last {@link INTO_VIEW} read got (0 when it got none). */
  directBytes = 0;
  /** The last `Host` seen and the url prefix made of it (clients repeat their Host). */
  lastHost: string | null = null;
  lastUrlPrefix = "http://localhost";
  /** Interim responses being written (`writeInterim`), to be awaited before the next write. */
  pendingWrite: Promise<void> | null = null;
  /** Set while the connection is taken over: how its taker ends it when the server shuts down. */
  onShutdown: (() => void) | null = null;

  /** A socket read is outstanding. */
  private reading = false;
  /** Whoever waits for the outstanding read, or for the sweep's wake-up. */
  private waiter: (() => void) | null = null;
  private readonly onClose: (connection: Connection) => void;

  constructor(conn: Deno.TcpConn, now: number, onClose: (connection: Connection) => void) {
    this.conn = conn;
    this.remoteAddr = conn.remoteAddr as Deno.NetAddr;
    this.phaseSince = now;
    this.onClose = onClose;
  }

  /** Bytes read ahead and not consumed. */
  get buffered(): number {
    return this.end - this.start;
  }

  /** True while a socket read is outstanding. */
  get isReading(): boolean {
    return this.reading;
  }

  /**
   * Starts a read into `view`; the one place that reads the socket. `into` says where the
   * bytes go: {@link INTO_INPUT} appends them to the read-ahead, {@link INTO_INPUT_WATCHING}
   * also posts the next watch read, {@link INTO_VIEW} leaves them in `view` and their count in
   * `directBytes`. That bookkeeping runs before any waiter resumes, so a waiter sees it done.
   */
  readInto(view: Uint8Array, into: number): void {
    this.reading = true;
    this.conn.read(view).then((n) => {
      this.reading = false;
      if (this.closed) return this.closeSettled();
      if (n === null) this.peerGone();
      else if (into === INTO_VIEW) this.directBytes = n;
      else {
        this.end += n;
        if (into === INTO_INPUT_WATCHING && this.phase === PHASE_ACTIVE && this.waiter === null) {
          this.watch();
        }
      }
      this.wake();
    }, () => {
      this.reading = false;
      if (this.closed) return this.closeSettled();
      this.peerGone();
      this.wake();
    });
  }

  private peerGone(): void {
    if (this.eof) return;
    this.eof = true;
    const onPeerGone = this.onPeerGone;
    this.onPeerGone = null;
    onPeerGone?.();
  }

  /**
   * Makes room for at least one more byte after `end` without growing past `maxBytes` of
   * read-ahead (compacting first). Returns false when the buffer is full.
   */
  private makeRoom(maxBytes: number): boolean {
    if (this.end < this.input.length) return true;
    const buffered = this.end - this.start;
    if (this.start > 0) {
      if (buffered > 0) this.input.copyWithin(0, this.start, this.end);
      this.start = 0;
      this.end = buffered;
      return true;
    }
    if (this.input.length >= maxBytes) return false;
    const grown = new Uint8Array(Math.min(maxBytes, this.input.length * 2));
    grown.set(this.input.subarray(0, this.end));
    this.input = grown;
    return true;
  }

  /**
   * Reads more bytes into the read-ahead buffer (growing it up to `maxBytes`), or waits for
   * the read already outstanding. Resolves true after waiting: the caller then looks at the
   * buffer, `eof` and `timedOut` again (the sweep may have woken it). Resolves false at once
   * when nothing can be read: EOF, closed, or `maxBytes` already buffered.
   */
  fill(maxBytes: number): Promise<boolean> {
    if (!this.reading) {
      if (this.eof || this.closed) return Promise.resolve(false);
      if (!this.makeRoom(maxBytes)) return Promise.resolve(false);
      // Growing or compacting while this read is outstanding would move the bytes it writes:
      // makeRoom only runs when no read is outstanding.
      this.readInto(this.input.subarray(this.end), INTO_INPUT);
    }
    return new Promise<boolean>((resolve) => {
      this.waiter = () => resolve(true);
    });
  }

  /** Resolves whoever waits in {@link fill} or {@link waitRead}. */
  wake(): void {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.();
  }

  /** Waits until the outstanding read finished (or the sweep woke us). */
  waitRead(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.waiter = resolve;
    });
  }

  /**
   * Keeps one read posted into the free space of the read-ahead buffer (never growing it) so
   * the client's EOF or reset is seen while its request is handled; bytes that arrive (the
   * next pipelined request, or body bytes nobody asked for yet) are kept.
   */
  watch(): void {
    if (this.reading || this.eof || this.closed) return;
    // A buffer grown for a big head must not stay with the connection while it idles.
    this.shrink();
    if (this.end === this.input.length && !this.makeRoom(this.input.length)) return;
    this.readInto(this.input.subarray(this.end), INTO_INPUT_WATCHING);
  }

  /** Takes up to `max` read-ahead bytes (a view into the buffer, valid until the next fill). */
  take(max: number): Uint8Array {
    const n = Math.min(max, this.end - this.start);
    const bytes = this.input.subarray(this.start, this.start + n);
    this.start += n;
    // Rewinding under an outstanding read would misplace the bytes it is writing at `end`.
    if (this.start === this.end && !this.reading) this.start = this.end = 0;
    return bytes;
  }

  /** Drops a buffer that grew for a big head, so idle connections hold only the initial size. */
  shrink(): void {
    if (this.input.length > INITIAL_INPUT_BYTES && !this.reading) {
      const buffered = this.end - this.start;
      if (buffered <= INITIAL_INPUT_BYTES) {
        const small = new Uint8Array(INITIAL_INPUT_BYTES);
        small.set(this.input.subarray(this.start, this.end));
        this.input = small;
        this.start = 0;
        this.end = buffered;
      }
    }
  }

  /** Writes all of `bytes`. Throws when the socket fails. */
  async write(bytes: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < bytes.length) {
      offset += await this.conn.write(offset === 0 ? bytes : bytes.subarray(offset));
    }
  }

  /**
   * Writes an interim response (`100 Continue`, a handler's `103`) after any still being
   * written, so two never interleave; the final head awaits {@link pendingWrite} first.
   */
  writeInterim(bytes: Uint8Array): Promise<void> {
    const prior = this.pendingWrite;
    const write = prior === null ? this.write(bytes) : prior.then(() => this.write(bytes));
    const settled = write.catch(() => {});
    this.pendingWrite = settled;
    settled.then(() => {
      if (this.pendingWrite === settled) this.pendingWrite = null;
    });
    return write;
  }

  /** Enters `phase` now. */
  enter(phase: number, now: number): void {
    this.phase = phase;
    this.phaseSince = now;
    this.timedOut = false;
  }

  /** Closes the socket (once) and tells the server. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    // A request in flight learns that its client is gone (its signal aborts).
    this.peerGone();
    try {
      this.conn.close();
    } catch {
      // closed already
    }
    this.wake();
    // The server counts the connection until its last read settled, so a shutdown leaves
    // no operation behind.
    if (!this.reading) this.onClose(this);
  }

  private closeSettled(): void {
    this.wake();
    this.onClose(this);
  }
}
