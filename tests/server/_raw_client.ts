/**
 * A raw HTTP/1.1 test client over `Deno.connect`: it sends bytes exactly as given and parses
 * responses itself (Content-Length, chunked, or to EOF), with every wait bounded.
 *
 * @module
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One response as read off the wire. */
export interface RawResponse {
  status: number;
  /** The status line and field lines as sent. */
  head: string;
  /** Field lines as `[lower-cased name, value]`, in order. */
  fields: [string, string][];
  body: string;
  /** How the body was delimited. */
  framing: "length" | "chunked" | "close" | "none";
}

/** Rejects with `what` when `promise` takes longer than `ms`. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `condition` every 5 ms until it holds, failing after `ms`. */
export async function waitFor(condition: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A connection with a read-ahead buffer. */
export class RawClient {
  readonly conn: Deno.TcpConn;
  private pending = new Uint8Array(0);
  private closed = false;
  /** The server closed its side. */
  eof = false;

  private constructor(conn: Deno.TcpConn) {
    this.conn = conn;
  }

  /** Connects to `port` on loopback. */
  static async connect(port: number): Promise<RawClient> {
    return new RawClient(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  /** Sends text (one byte per character) or bytes. */
  async send(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? latin1(data) : data;
    let offset = 0;
    while (offset < bytes.length) offset += await this.conn.write(bytes.subarray(offset));
  }

  private async fill(ms: number): Promise<boolean> {
    const buffer = new Uint8Array(64 * 1024);
    const n = await within(this.conn.read(buffer), ms, "reading from the server");
    if (n === null) {
      this.eof = true;
      return false;
    }
    const next = new Uint8Array(this.pending.length + n);
    next.set(this.pending);
    next.set(buffer.subarray(0, n), this.pending.length);
    this.pending = next;
    return true;
  }

  /** Everything until the server closes, as text. */
  async readToEnd(ms = 3000): Promise<string> {
    const deadline = performance.now() + ms;
    try {
      while (await this.fill(Math.max(1, deadline - performance.now())));
    } catch (error) {
      if (!(error instanceof Deno.errors.ConnectionReset)) throw error;
      this.eof = true;
    }
    const text = decoder.decode(this.pending);
    this.pending = new Uint8Array(0);
    return text;
  }

  /** True when the server closes the connection (EOF or reset) within `ms` with no bytes. */
  async closesWithin(ms: number): Promise<boolean> {
    try {
      const more = await this.fill(ms);
      return !more && this.pending.length === 0;
    } catch (error) {
      if (error instanceof Deno.errors.ConnectionReset) return true;
      throw error;
    }
  }

  private async line(ms: number): Promise<string> {
    while (true) {
      const lf = this.pending.indexOf(10);
      if (lf !== -1) {
        const text = decoder.decode(this.pending.subarray(0, lf)).replace(/\r$/, "");
        this.pending = this.pending.subarray(lf + 1);
        return text;
      }
      if (!(await this.fill(ms))) throw new Error("EOF inside a response line");
    }
  }

  private async bytes(n: number, ms: number): Promise<Uint8Array> {
    while (this.pending.length < n) {
      if (!(await this.fill(ms))) throw new Error("EOF inside a response body");
    }
    const out = this.pending.slice(0, n);
    this.pending = this.pending.subarray(n);
    return out;
  }

  /**
   * Reads one response. `bodyless` for a response to HEAD. Interim (1xx) responses are returned
   * like any other, so a test can see them.
   */
  async response(options: { bodyless?: boolean; ms?: number } = {}): Promise<RawResponse> {
    const ms = options.ms ?? 3000;
    const statusLine = await this.line(ms);
    const match = /^HTTP\/1\.1 (\d{3}) /.exec(statusLine);
    if (match === null) throw new Error(`bad status line: ${JSON.stringify(statusLine)}`);
    const status = Number(match[1]);
    const fields: [string, string][] = [];
    let head = statusLine + "\r\n";
    while (true) {
      const line = await this.line(ms);
      if (line === "") break;
      head += line + "\r\n";
      const colon = line.indexOf(":");
      fields.push([line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()]);
    }
    const field = (name: string) => fields.find(([n]) => n === name)?.[1];
    if (options.bodyless || status < 200 || status === 204 || status === 304) {
      return { status, head, fields, body: "", framing: "none" };
    }
    if (field("transfer-encoding") === "chunked") {
      let body = "";
      while (true) {
        const size = parseInt(await this.line(ms), 16);
        if (size === 0) {
          while ((await this.line(ms)) !== "");
          break;
        }
        body += decoder.decode(await this.bytes(size, ms));
        await this.bytes(2, ms);
      }
      return { status, head, fields, body, framing: "chunked" };
    }
    const length = field("content-length");
    if (length !== undefined) {
      const body = decoder.decode(await this.bytes(Number(length), ms));
      return { status, head, fields, body, framing: "length" };
    }
    return { status, head, fields, body: await this.readToEnd(ms), framing: "close" };
  }

  /** Closes the socket (once). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.conn.close();
    } catch {
      // closed
    }
  }
}

/** One byte per character, so tests can send obs-text and raw control bytes. */
export function latin1(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i) & 0xff;
  return out;
}

/** UTF-8 bytes of `text`. */
export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}
