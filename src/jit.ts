// JavaScriptCore's tier-up thresholds (Bun.unsafe.setJITPolicy: 1 is JSC's normal policy, N > 1
// multiplies its thresholds). The executable starts at START_JIT (scripts/build.ts passes it as
// --compile-jit-policy): a dump or restore of a small process is ~20 ms of code that mostly runs
// once, cheaper in the interpreter than compiled on the JIT threads. Work that loops long (the
// pages of a large process, a server's loop) goes to WORK_JIT, the start value of the executables
// before (x16): its loops tier up as they did then.
// No imports: the page Workers' entry (codec/worker.ts) uses it too.

export const START_JIT = 256;
export const WORK_JIT = 16;

let current = START_JIT;

/** From here on this thread's JavaScript tiers up as long-running work should. False if it
 *  already did. */
export function jitForWork(): boolean {
  if (current === WORK_JIT) return false;
  Bun.unsafe.setJITPolicy(WORK_JIT);
  current = WORK_JIT;
  return true;
}

/** jitForWork when n (fds, threads, bytes of an image...) reaches limit: work that grows with the
 *  process loops over it. True if this switched. */
export function jitIfLarge(n: number, limit: number): boolean {
  return n >= limit && jitForWork();
}

/** The page blocks' JavaScript (a dump's Workers, codec/worker.ts, and its main thread while it
 *  reads blocks beside them, codec/pipeline.ts): a loop over 256 page flags and a few calls, kept
 *  in the interpreter. */
export const BLOCKS_JIT = 1000;

/** This thread's thresholds at `policy` while fn runs, then back to where they were (`current`). */
function jitWhile<T>(policy: number, fn: () => T): T {
  Bun.unsafe.setJITPolicy(policy);
  try {
    return fn();
  } finally {
    Bun.unsafe.setJITPolicy(current);
  }
}

/** This thread's thresholds at BLOCKS_JIT while fn runs, then back to where they were. */
export function jitForBlocks<T>(fn: () => T): T {
  return jitWhile(BLOCKS_JIT, fn);
}

/**
 * JavaScriptCore's own thresholds (x1) while fn runs, then back to where they were: for loops over
 * a large image that run once, before anything else can start (a restore's pagemap: decoded,
 * checked against the VMAs and against the page index). At x16 most of a 1 GiB heap's 55,000 runs
 * went through the interpreter and the baseline JIT before the optimizing one took over.
 */
export function jitForLoops<T>(fn: () => T): T {
  return jitWhile(1, fn);
}
