/**
 * A small but strict parser of the Prometheus text exposition format (version 0.0.4), for
 * tests: it rejects what Prometheus would reject (bad names, bad label syntax, bad values,
 * a TYPE after its samples, a sample of a family typed differently) instead of matching strings.
 *
 * @module
 */

/** One sample line. */
export interface PromSample {
  /** The sample's metric name, e.g. `http_server_request_duration_seconds_bucket`. */
  name: string;
  /** Label names to values (unescaped). */
  labels: Record<string, string>;
  /** The value (`+Inf`, `-Inf` and `NaN` included). */
  value: number;
  /** Optional timestamp in ms. */
  timestampMs?: number;
}

/** A metric family: the TYPE/HELP of a name and its samples. */
export interface PromFamily {
  /** The family name as in `# TYPE`. */
  name: string;
  /** counter, gauge, histogram, summary or untyped. */
  type: string;
  /** HELP text (unescaped), empty when absent. */
  help: string;
  /** Samples in file order. */
  samples: PromSample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

function fail(lineNumber: number, message: string, line: string): never {
  throw new SyntaxError(`line ${lineNumber}: ${message}: ${JSON.stringify(line)}`);
}

function parseValue(text: string): number {
  if (text === "+Inf" || text === "Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  if (text === "NaN") return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) {
    throw new Error(`not a float: ${text}`);
  }
  return Number(text);
}

function unescapeHelp(text: string): string {
  return text.replace(/\\(\\|n)/g, (_, c) => (c === "n" ? "\n" : "\\"));
}

/** Parses `{a="x",b="y\"z"}` starting at `start` (at the `{`); returns labels and end index. */
function parseLabels(
  line: string,
  start: number,
  lineNumber: number,
): { labels: Record<string, string>; end: number } {
  const labels: Record<string, string> = {};
  let i = start + 1;
  while (true) {
    while (line[i] === " ") i++;
    if (line[i] === "}") return { labels, end: i + 1 };
    const nameStart = i;
    while (i < line.length && /[a-zA-Z0-9_]/.test(line[i])) i++;
    const name = line.slice(nameStart, i);
    if (!LABEL_NAME.test(name)) fail(lineNumber, "bad label name", line);
    if (name in labels) fail(lineNumber, `duplicate label ${name}`, line);
    while (line[i] === " ") i++;
    if (line[i] !== "=") fail(lineNumber, "expected =", line);
    i++;
    while (line[i] === " ") i++;
    if (line[i] !== '"') fail(lineNumber, "expected opening quote", line);
    i++;
    let value = "";
    while (true) {
      if (i >= line.length) fail(lineNumber, "unterminated label value", line);
      const c = line[i];
      if (c === '"') break;
      if (c === "\\") {
        const next = line[i + 1];
        if (next === "\\") value += "\\";
        else if (next === '"') value += '"';
        else if (next === "n") value += "\n";
        else fail(lineNumber, "bad escape in label value", line);
        i += 2;
        continue;
      }
      value += c;
      i++;
    }
    labels[name] = value;
    i++;
    while (line[i] === " ") i++;
    if (line[i] === ",") {
      i++;
      continue;
    }
    if (line[i] === "}") return { labels, end: i + 1 };
    fail(lineNumber, "expected , or }", line);
  }
}

/** The family a sample belongs to, given the family types seen so far. */
function familyOf(sampleName: string, families: Map<string, PromFamily>): string {
  if (families.has(sampleName)) return sampleName;
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (sampleName.endsWith(suffix)) {
      const base = sampleName.slice(0, -suffix.length);
      const family = families.get(base);
      if (family !== undefined && (family.type === "histogram" || family.type === "summary")) {
        return base;
      }
    }
  }
  return sampleName;
}

/** Parses a whole exposition; throws a SyntaxError naming the first bad line. */
export function parsePrometheusText(text: string): Map<string, PromFamily> {
  const families = new Map<string, PromFamily>();
  const sampled = new Set<string>();
  const lines = text.split("\n");
  lines.forEach((line, index) => {
    const lineNumber = index + 1;
    if (line.trim() === "") return;
    if (line.startsWith("#")) {
      const match = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s+(.*))?$/.exec(line);
      if (match === null) return; // any other comment, e.g. `# UNIT`, is ignored by 0.0.4
      const [, keyword, name, rest = ""] = match;
      if (!METRIC_NAME.test(name)) fail(lineNumber, "bad metric name", line);
      let family = families.get(name);
      if (family === undefined) {
        family = { name, type: "untyped", help: "", samples: [] };
        families.set(name, family);
      }
      if (keyword === "TYPE") {
        if (!TYPES.has(rest)) fail(lineNumber, "unknown type", line);
        if (sampled.has(name)) fail(lineNumber, "TYPE after samples", line);
        family.type = rest;
      } else {
        family.help = unescapeHelp(rest);
      }
      return;
    }
    let i = 0;
    while (i < line.length && /[a-zA-Z0-9_:]/.test(line[i])) i++;
    const name = line.slice(0, i);
    if (!METRIC_NAME.test(name)) fail(lineNumber, "bad metric name", line);
    let labels: Record<string, string> = {};
    if (line[i] === "{") ({ labels, end: i } = parseLabels(line, i, lineNumber));
    const rest = line.slice(i).trim().split(/\s+/);
    if (rest.length < 1 || rest.length > 2 || rest[0] === "") {
      fail(lineNumber, "expected value [timestamp]", line);
    }
    let value: number;
    try {
      value = parseValue(rest[0]);
    } catch (error) {
      fail(lineNumber, (error as Error).message, line);
    }
    const sample: PromSample = { name, labels, value };
    if (rest[1] !== undefined) {
      if (!/^-?\d+$/.test(rest[1])) fail(lineNumber, "bad timestamp", line);
      sample.timestampMs = Number(rest[1]);
    }
    const familyName = familyOf(name, families);
    let family = families.get(familyName);
    if (family === undefined) {
      family = { name: familyName, type: "untyped", help: "", samples: [] };
      families.set(familyName, family);
    }
    sampled.add(familyName);
    family.samples.push(sample);
  });
  return families;
}

/** Samples of `family` named `sampleName` whose labels include every pair of `match`. */
export function samplesWhere(
  families: Map<string, PromFamily>,
  family: string,
  sampleName: string,
  match: Record<string, string> = {},
): PromSample[] {
  return (families.get(family)?.samples ?? []).filter((sample) =>
    sample.name === sampleName &&
    Object.entries(match).every(([key, value]) => sample.labels[key] === value)
  );
}
