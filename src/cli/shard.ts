/**
 * `--shard i/k` and `--shard auto` (with `--shards N`) for `cokv profile` and `cokv eval`: which part of the work a
 * process does. `auto` reads the scheduler's task index: a Slurm array job's `SLURM_ARRAY_TASK_ID` with
 * `SLURM_ARRAY_TASK_MIN`/`SLURM_ARRAY_TASK_MAX` (or `SLURM_ARRAY_TASK_COUNT`), or a Kubernetes Indexed Job's
 * `JOB_COMPLETION_INDEX` with the shard count from `--shards N` or `COKV_SHARDS` (Kubernetes does not export the
 * Job's completions). Anything missing or inconsistent is one CokvError line.
 */
import { CokvError } from '../errors.js';

export interface Shard {
  index: number;
  count: number;
}

/** Help texts of the two flags. */
export const SHARD_HELP = 'do only part i of k of the work (0 ≤ i < k), or auto: the Slurm array task or Kubernetes Indexed Job completion index';
export const SHARDS_HELP = 'with --shard auto: the number of shards (default: the Slurm array size, or COKV_SHARDS for Kubernetes)';

function envInt(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const v = env[name];
  if (v === undefined || v === '') return undefined;
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(Number(v))) throw new CokvError(`--shard auto: ${name}=${JSON.stringify(v)} is not a non-negative integer`, 'flag');
  return Number(v);
}

function countFlag(flag: string, v: string): number {
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(Number(v)) || Number(v) < 1) throw new CokvError(`${flag}: '${v}' must be a positive integer`, 'flag');
  return Number(v);
}

/**
 * Parse `--shard` (and `--shards`): undefined when neither is given (the whole work), else the shard. A shard
 * 0/1 is the whole work too; callers treat it as unsharded.
 */
export function parseShard(spec: string | undefined, shards: string | undefined, env: NodeJS.ProcessEnv = process.env): Shard | undefined {
  if (spec === undefined) {
    if (shards !== undefined) throw new CokvError('--shards: only with --shard auto (--shard i/k names the count itself)', 'flag');
    return undefined;
  }
  if (spec !== 'auto') {
    if (shards !== undefined) throw new CokvError('--shards: only with --shard auto (--shard i/k names the count itself)', 'flag');
    const m = /^(\d+)\/(\d+)$/.exec(spec);
    if (!m || Number(m[2]) < 1 || Number(m[1]) >= Number(m[2]) || !Number.isSafeInteger(Number(m[2]))) {
      throw new CokvError(`--shard: '${spec}' must be i/k with 0 ≤ i < k, or auto`, 'flag');
    }
    return { index: Number(m[1]), count: Number(m[2]) };
  }
  const flagCount = shards !== undefined ? countFlag('--shards', shards) : undefined;
  const slurmId = envInt(env, 'SLURM_ARRAY_TASK_ID');
  const k8sIndex = envInt(env, 'JOB_COMPLETION_INDEX');
  if (slurmId !== undefined && k8sIndex !== undefined) {
    throw new CokvError('--shard auto: both SLURM_ARRAY_TASK_ID and JOB_COMPLETION_INDEX are set; give --shard i/k', 'flag');
  }
  if (slurmId !== undefined) {
    const min = envInt(env, 'SLURM_ARRAY_TASK_MIN'), max = envInt(env, 'SLURM_ARRAY_TASK_MAX');
    const envCount = envInt(env, 'SLURM_ARRAY_TASK_COUNT');
    const step = envInt(env, 'SLURM_ARRAY_TASK_STEP');
    if (step !== undefined && step !== 1) {
      throw new CokvError(`--shard auto: the Slurm array has step ${step}; submit --array=0-${(envCount ?? 1) - 1} (consecutive task ids)`, 'flag');
    }
    let index: number, count: number;
    if (min !== undefined && max !== undefined) {
      if (max < min || slurmId < min || slurmId > max) {
        throw new CokvError(`--shard auto: SLURM_ARRAY_TASK_ID=${slurmId} is outside SLURM_ARRAY_TASK_MIN..MAX=${min}..${max}`, 'flag');
      }
      index = slurmId - min;
      count = max - min + 1;
      if (envCount !== undefined && envCount !== count) {
        throw new CokvError(`--shard auto: SLURM_ARRAY_TASK_COUNT=${envCount} but the array spans ${min}..${max} (${count} ids): submit consecutive ids, e.g. --array=0-${envCount - 1}`, 'flag');
      }
    } else if (envCount !== undefined) {
      index = slurmId - (min ?? 0);
      count = envCount;
    } else {
      throw new CokvError('--shard auto: SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_MIN/MAX nor SLURM_ARRAY_TASK_COUNT', 'flag');
    }
    if (index < 0 || index >= count) throw new CokvError(`--shard auto: SLURM_ARRAY_TASK_ID=${slurmId} is outside the ${count} tasks of the array`, 'flag');
    if (flagCount !== undefined && flagCount !== count) {
      throw new CokvError(`--shard auto: --shards ${flagCount} but the Slurm array has ${count} tasks`, 'flag');
    }
    return { index, count };
  }
  if (k8sIndex !== undefined) {
    const envCount = env.COKV_SHARDS !== undefined && env.COKV_SHARDS !== '' ? countFlag('COKV_SHARDS', env.COKV_SHARDS) : undefined;
    if (flagCount !== undefined && envCount !== undefined && flagCount !== envCount) {
      throw new CokvError(`--shard auto: --shards ${flagCount} but COKV_SHARDS=${envCount}`, 'flag');
    }
    const count = flagCount ?? envCount;
    if (count === undefined) {
      throw new CokvError('--shard auto: JOB_COMPLETION_INDEX is set but not the shard count: give --shards N (the Job\'s completions) or set COKV_SHARDS', 'flag');
    }
    if (k8sIndex >= count) throw new CokvError(`--shard auto: JOB_COMPLETION_INDEX=${k8sIndex} is not below the shard count ${count}`, 'flag');
    return { index: k8sIndex, count };
  }
  throw new CokvError('--shard auto: neither SLURM_ARRAY_TASK_ID (a Slurm array job) nor JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) is set; give --shard i/k', 'flag');
}

/** "i/k" of a shard. */
export function shardText(s: Shard): string {
  return `${s.index}/${s.count}`;
}
