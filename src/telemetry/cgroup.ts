/**
 * The container's cgroup v2 limits as telemetry reports them: the same reader the configuration
 * caps its defaults with (`src/config/cgroup.ts`), re-exported here so telemetry's public
 * exports keep their path.
 *
 * @module
 */
export {
  type CgroupLimits,
  DEFAULT_CGROUP_ROOT,
  parseCpuMax,
  parseMemoryMax,
  readCgroupLimits,
} from "../config/cgroup.ts";
