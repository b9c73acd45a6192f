/**
 * Retries: which requests may be retried and when (`policy.ts`), and the budgets that bound
 * them, per instance (`createRetryBudget`) or for the whole fleet (`createFleetRetryBudgets`).
 *
 * @example
 * ```ts
 * import { createFleetRetryBudgets } from "./src/retry/mod.ts";
 * const retryBudgets = createFleetRetryBudgets();
 * const users = retryBudgets.budget("users", { budgetPercent: 20, minRetriesPerSecond: 3 });
 * // createFleetBreaker({ ..., retryBudgets }) exchanges the counts on the breaker's KV session.
 * ```
 *
 * @module
 */
export {
  backoffDelayMs,
  createRetryBudget,
  isRetryableRequest,
  retryAfterMs,
  type RetryBudget,
  type RetryBudgetOptions,
} from "./policy.ts";
export {
  createFleetRetryBudgets,
  type FleetRetryBudget,
  type FleetRetryBudgetOptions,
  type FleetRetryBudgets,
  type FleetRetryBudgetsOptions,
  type FleetRetrySnapshot,
  retryCountKey,
} from "./fleet_budget.ts";
