import assert from "node:assert/strict";
import {
  type BreakerEvent,
  type BreakerRecord,
  CLOCK_SKEW_TOLERANCE_MS,
  HALF_OPEN_RETRY_AFTER_MS,
  INITIAL_RECORD,
  isProbeDue,
  openDurationMs,
  parseRecord,
  retryAfterMs,
  shouldTrip,
  stateAt,
  transition,
} from "../../src/breaker/policy.ts";
import { policy } from "./_helpers.ts";

const T0 = 1_000_000;
const base = policy({ recoveryTimeoutMs: 1000, maxRecoveryTimeoutMs: 10_000 });

const closed: BreakerRecord = { ...INITIAL_RECORD, generation: 7 };
const open: BreakerRecord = {
  state: "open",
  generation: 8,
  openedAt: T0,
  probeAt: T0 + 1000,
  openCount: 1,
};
const forcedOpen: BreakerRecord = {
  state: "forced_open",
  generation: 9,
  openedAt: T0,
  probeAt: null,
  openCount: 0,
};
const forcedClosed: BreakerRecord = {
  state: "forced_closed",
  generation: 10,
  openedAt: null,
  probeAt: null,
  openCount: 0,
};

type Expect = "same" | Partial<BreakerRecord>;

const rows: Array<[string, BreakerRecord, BreakerEvent, number, Expect]> = [
  // trip
  ["closed trips to open for recoveryTimeoutMs", closed, { type: "trip" }, T0, {
    state: "open",
    generation: 8,
    openedAt: T0,
    probeAt: T0 + 1000,
    openCount: 1,
  }],
  ["open ignores a trip", open, { type: "trip" }, T0 + 10, "same"],
  ["half-open (open, due) ignores a trip", open, { type: "trip" }, T0 + 5000, "same"],
  ["forced_open ignores a trip", forcedOpen, { type: "trip" }, T0, "same"],
  ["forced_closed ignores a trip", forcedClosed, { type: "trip" }, T0, "same"],
  // probe success
  [
    "probe success closes with a new generation",
    open,
    {
      type: "probe_success",
      generation: 8,
    },
    T0 + 1000,
    { state: "closed", generation: 9, openedAt: null, probeAt: null, openCount: 0 },
  ],
  [
    "probe success from an older generation is ignored",
    open,
    {
      type: "probe_success",
      generation: 7,
    },
    T0 + 1000,
    "same",
  ],
  [
    "probe success from a newer generation is ignored",
    open,
    {
      type: "probe_success",
      generation: 9,
    },
    T0 + 1000,
    "same",
  ],
  [
    "probe success on a closed breaker is ignored",
    closed,
    {
      type: "probe_success",
      generation: 7,
    },
    T0,
    "same",
  ],
  [
    "probe success on forced_open is ignored",
    forcedOpen,
    {
      type: "probe_success",
      generation: 9,
    },
    T0,
    "same",
  ],
  // probe failure
  [
    "probe failure re-opens for twice as long (jittered down at most 20%)",
    open,
    {
      type: "probe_failure",
      generation: 8,
    },
    T0 + 1000,
    { state: "open", generation: 9, openedAt: T0 + 1000, openCount: 2 },
  ],
  [
    "probe failure from an older generation is ignored",
    open,
    {
      type: "probe_failure",
      generation: 3,
    },
    T0 + 1000,
    "same",
  ],
  [
    "probe failure on closed is ignored",
    closed,
    {
      type: "probe_failure",
      generation: 7,
    },
    T0,
    "same",
  ],
  [
    "probe failure on forced_closed is ignored",
    forcedClosed,
    {
      type: "probe_failure",
      generation: 10,
    },
    T0,
    "same",
  ],
  // force
  ["force open from closed", closed, { type: "force", action: "open" }, T0, {
    state: "forced_open",
    generation: 8,
    openedAt: T0,
    probeAt: null,
  }],
  ["force close from open", open, { type: "force", action: "close" }, T0, {
    state: "forced_closed",
    generation: 9,
    openedAt: null,
    probeAt: null,
    openCount: 0,
  }],
  ["force reset from forced_open", forcedOpen, { type: "force", action: "reset" }, T0, {
    state: "closed",
    generation: 10,
    openCount: 0,
  }],
  [
    "force reset from closed still starts a new generation",
    closed,
    {
      type: "force",
      action: "reset",
    },
    T0,
    { state: "closed", generation: 8 },
  ],
  [
    "force open of forced_open starts a new generation",
    forcedOpen,
    {
      type: "force",
      action: "open",
    },
    T0 + 5,
    { state: "forced_open", generation: 10, openedAt: T0 + 5 },
  ],
  ["force open from forced_closed", forcedClosed, { type: "force", action: "open" }, T0, {
    state: "forced_open",
    generation: 11,
  }],
  // clock going backwards
  [
    "trip with the clock behind the last transition still opens",
    closed,
    {
      type: "trip",
    },
    T0 - 60_000,
    { state: "open", openedAt: T0 - 60_000, probeAt: T0 - 59_000 },
  ],
  [
    "probe failure with the clock far behind re-anchors on the new clock",
    open,
    {
      type: "probe_failure",
      generation: 8,
    },
    T0 - 3_600_000,
    { state: "open", openedAt: T0 - 3_600_000, openCount: 2 },
  ],
];

for (const [name, record, event, nowMs, expected] of rows) {
  Deno.test(`policy: ${name}`, () => {
    const next = transition(base, record, event, nowMs, 0.5);
    if (expected === "same") {
      assert.equal(next, record, "no transition returns the same object");
      return;
    }
    assert.notEqual(next, record);
    for (const [key, value] of Object.entries(expected)) {
      assert.equal(next[key as keyof BreakerRecord], value, key);
    }
    if (next.state === "open") {
      const duration = next.probeAt! - next.openedAt!;
      const nominal = Math.min(base.maxRecoveryTimeoutMs, 1000 * 2 ** (next.openCount - 1));
      if (next.openCount === 1) assert.equal(duration, nominal);
      else assert.ok(duration >= nominal * 0.8 && duration <= nominal, `duration ${duration}`);
    }
  });
}

Deno.test("policy: every applied event increments the generation by exactly one", () => {
  const events: BreakerEvent[] = [
    { type: "trip" },
    { type: "probe_success", generation: 8 },
    { type: "probe_failure", generation: 8 },
    { type: "force", action: "open" },
    { type: "force", action: "close" },
    { type: "force", action: "reset" },
  ];
  for (const record of [closed, open, forcedOpen, forcedClosed]) {
    for (const event of events) {
      const next = transition(base, record, event, T0, 0.3);
      if (next !== record) assert.equal(next.generation, record.generation + 1);
    }
  }
});

Deno.test("policy: open duration doubles per failed probe, jittered down, capped", () => {
  const p = policy({ recoveryTimeoutMs: 1000, maxRecoveryTimeoutMs: 6000 });
  const table: Array<[number, number, number]> = [
    // openCount, random, expected ms
    [1, 0, 1000],
    [1, 0.999, 1000],
    [2, 0.999, 1999],
    [2, 0, 1600],
    [3, 0.5, 3600],
    [4, 0.999, 5998], // 8000 capped to 6000, then jitter
    [4, 0, 4800],
    [60, 0.999, 5998],
    [5000, 0.999, 5998], // 2^k would overflow; stays finite
  ];
  for (const [openCount, random, expected] of table) {
    assert.equal(openDurationMs(p, openCount, random), expected, `openCount ${openCount}`);
  }
  // A cap below the base is read as "no growth", never as a shorter first open.
  const odd = policy({ recoveryTimeoutMs: 5000, maxRecoveryTimeoutMs: 1000 });
  assert.equal(openDurationMs(odd, 1, 0.5), 5000);
  assert.ok(openDurationMs(odd, 3, 0.999) <= 5000);
});

Deno.test("policy: a chain of failed probes grows the open time until the cap", () => {
  let record = transition(base, closed, { type: "trip" }, T0, 0.999);
  const durations: number[] = [];
  let nowMs = T0;
  for (let probe = 0; probe < 6; probe++) {
    durations.push(record.probeAt! - record.openedAt!);
    nowMs = record.probeAt!;
    record = transition(
      base,
      record,
      { type: "probe_failure", generation: record.generation },
      nowMs,
      0.999,
    );
  }
  assert.deepEqual(durations, [1000, 1999, 3999, 7998, 9998, 9998]);
  const healed = transition(
    base,
    record,
    { type: "probe_success", generation: record.generation },
    nowMs,
    0,
  );
  assert.equal(healed.state, "closed");
  assert.equal(healed.openCount, 0);
  const again = transition(base, healed, { type: "trip" }, nowMs + 1, 0);
  assert.equal(again.probeAt! - again.openedAt!, 1000, "a new outage starts from the base again");
});

Deno.test("policy: stateAt derives half_open exactly at probeAt", () => {
  const rows: Array<[BreakerRecord, number, string]> = [
    [closed, T0, "closed"],
    [open, T0, "open"],
    [open, T0 + 999, "open"],
    [open, T0 + 1000, "half_open"],
    [open, T0 + 10_000_000, "half_open"],
    [forcedOpen, T0 + 10_000_000, "forced_open"],
    [forcedClosed, T0, "forced_closed"],
    // clock slightly behind openedAt (skew between instances): still open
    [open, T0 - CLOCK_SKEW_TOLERANCE_MS, "open"],
    // clock far behind openedAt (stepped back): let a probe round decide
    [open, T0 - CLOCK_SKEW_TOLERANCE_MS - 1, "half_open"],
    [open, T0 - 86_400_000, "half_open"],
  ];
  for (const [record, nowMs, expected] of rows) {
    assert.equal(stateAt(record, nowMs), expected, `${record.state} at ${nowMs - T0}`);
    assert.equal(isProbeDue(record, nowMs), expected === "half_open");
  }
});

Deno.test("policy: retryAfterMs is bounded and never negative, whatever the clock did", () => {
  const rows: Array<[BreakerRecord, number, number]> = [
    [closed, T0, 0],
    [forcedClosed, T0, 0],
    [open, T0, 1000],
    [open, T0 + 400, 600],
    [open, T0 + 999, 1],
    [open, T0 + 1000, HALF_OPEN_RETRY_AFTER_MS],
    [open, T0 - 500, 1000], // behind, within tolerance: never more than the open duration
    [open, T0 - 86_400_000, HALF_OPEN_RETRY_AFTER_MS],
    [forcedOpen, T0, base.recoveryTimeoutMs],
  ];
  for (const [record, nowMs, expected] of rows) {
    assert.equal(retryAfterMs(base, record, nowMs), expected, `${record.state} at ${nowMs - T0}`);
  }
});

Deno.test("policy: shouldTrip at, below and above the threshold, with the quorum", () => {
  const quorum = policy({ failureThreshold: 3, minInstances: 2 });
  const rows: Array<[number, number, boolean]> = [
    [2, 2, false],
    [3, 1, false], // threshold reached by one instance only
    [3, 2, true], // exactly at threshold and quorum
    [30, 5, true],
    [0, 0, false],
  ];
  for (const [failures, instances, expected] of rows) {
    assert.equal(shouldTrip(quorum, failures, instances), expected, `${failures}/${instances}`);
  }
  assert.equal(shouldTrip(policy({ failureThreshold: 1 }), 1, 1), true);
});

Deno.test("policy: parseRecord accepts records and rejects anything else", () => {
  assert.deepEqual(parseRecord({ ...open, updatedBy: "gw-1" }), open);
  assert.deepEqual(parseRecord(closed), closed);
  for (
    const bad of [
      null,
      "open",
      42,
      { ...open, state: "half_open" },
      { ...open, generation: 1.5 },
      { ...open, openedAt: "yesterday" },
      { ...open, openCount: undefined },
    ]
  ) {
    assert.equal(parseRecord(bad), null, JSON.stringify(bad));
  }
});
