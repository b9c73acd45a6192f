import assert from "node:assert/strict";
import type { AttemptOutcome } from "../../src/breaker/types.ts";
import { type AdmissionControl, admissionTicket, NO_VERDICT } from "../../src/proxy/admission.ts";

function breaker() {
  const records: AttemptOutcome[] = [];
  const control: AdmissionControl = {
    admit: () => ({ allowed: true, probe: true, generation: 1 }),
    record: (_service, _admission, outcome) => records.push(outcome),
  };
  return { control, records };
}

Deno.test("admission ticket: disposed unused, it hands the admission back once", () => {
  const { control, records } = breaker();
  {
    using ticket = admissionTicket(control, "s", { allowed: true, probe: true, generation: 1 });
    assert.equal(ticket.probe, true);
  }
  assert.deepEqual(records, [NO_VERDICT]);
});

Deno.test("admission ticket: recorded outcomes are all the breaker hears", () => {
  const { control, records } = breaker();
  const ticket = admissionTicket(control, "s", { allowed: true, probe: false, generation: 1 });
  ticket.record({ status: 503, durationMs: 4 });
  ticket.record({ status: 200, durationMs: 2 });
  ticket[Symbol.dispose]();
  ticket[Symbol.dispose]();
  assert.deepEqual(records, [{ status: 503, durationMs: 4 }, { status: 200, durationMs: 2 }]);
});
