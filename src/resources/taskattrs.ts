// Process attributes of the task core, both directions: personality, the child-subreaper bit,
// the audit login uid and oom_score_adj. Read at dump from /proc and (the subreaper bit) the
// dump's batch of injected syscalls; set again at restore through the process's own injected
// syscalls (a login uid only the process itself may write) or its /proc entry.
import { readFileSync, writeFileSync } from "../sys/fs";
import { readText } from "../sys/proc";
import { NR } from "../sys/nr";
import { PR } from "../sys/flags";
import { O } from "../sys/mem";
import { errnoText } from "../sys/errno";
import type { Injector, OutCall, InCall } from "../ptrace/inject";
import type * as S from "../images/schemas";
import { CriuError, log } from "../log";

const AUDIT_UNSET = 0xffffffff;

/**
 * Sessions and process groups restore can make exactly (CRIU's rule, checked at dump and again at
 * restore): each led by a process of the tree (made with setsid and setpgid), or, with
 * --shell-job, the root's own (they become criu-bun's, the job's). The first process whose session
 * or group is neither, and which of the two; pids, pgids and sids as the tree's namespace numbers them.
 */
export function unledGroup<T extends { pid: number; pgid: number; sid: number }>(
  tasks: T[],
  shellJob: boolean
): { t: T; what: "session" | "group" } | undefined {
  const inTree = new Set(tasks.map((t) => t.pid));
  const root = tasks[0];
  for (const t of tasks) {
    if (!inTree.has(t.sid) && !(shellJob && t.sid === root.sid)) return { t, what: "session" };
    if (!inTree.has(t.pgid) && !(shellJob && t.pgid === root.pgid)) return { t, what: "group" };
  }
  return undefined;
}

// ---------- dump ----------

/** PR_GET_CHILD_SUBREAPER, for the dump's batch */
export function subreaperCall(): OutCall {
  return { nr: NR.prctl, args: (buf: bigint) => [PR.GET_CHILD_SUBREAPER, buf], out: 8 };
}
export function decodeSubreaper(got: { r: bigint; b: Uint8Array }): boolean {
  return got.r === 0n ? got.b[0] !== 0 : false;
}

/** personality, login uid and oom_score_adj of a process, as task_core_entry keeps them */
export function dumpTaskAttrs(pid: number) {
  const personality = parseInt(readText(`/proc/${pid}/personality`).trim(), 16);
  let loginuid = AUDIT_UNSET;
  try {
    loginuid = Number(readText(`/proc/${pid}/loginuid`).trim());
  } catch {}
  const oomScoreAdj = Number(readText(`/proc/${pid}/oom_score_adj`).trim());
  log.debug(
    `taskattrs: process ${pid}: personality 0x${personality.toString(16)}, login uid ${loginuid}, oom_score_adj ${oomScoreAdj}`
  );
  return { personality, loginuid, oomScoreAdj };
}

// ---------- restore ----------

/** The personality, first in its batch (it decides how the process's later calls behave). */
export function personalityCall(tc: S.task_core_entry): InCall {
  // (its result is the old personality; as before, not checked)
  return { nr: NR.personality, data: [], args: () => [tc.personality], check: () => {} };
}

/**
 * The subreaper bit, login uid and oom_score_adj of process VPID (PID here). `str(s)` copies a
 * path into its scratch area, `scratch(off, bytes)` bytes.
 */
export function restoreTaskAttrs(
  proc: {
    pid: number;
    vpid: number;
    inj: Injector;
    str: (s: string) => bigint;
    scratch: (off: bigint, data: Uint8Array) => bigint;
  },
  tc: S.task_core_entry
) {
  if (tc.childSubreaper) proc.inj.ok("prctl(PR_SET_CHILD_SUBREAPER)", NR.prctl, PR.SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  restoreLoginuid(proc, tc.loginuid);
  if (tc.oomScoreAdj !== undefined) {
    try {
      writeFileSync(`/proc/${proc.pid}/oom_score_adj`, String(tc.oomScoreAdj));
    } catch {}
  }
  log.debug(
    `taskattrs: process ${proc.vpid}: personality 0x${tc.personality.toString(16)}${tc.childSubreaper ? ", child subreaper" : ""}, oom_score_adj ${tc.oomScoreAdj ?? "unchanged"}`
  );
}

/** The audit login uid: only the process itself may write its /proc/self/loginuid. */
function restoreLoginuid(
  proc: { vpid: number; inj: Injector; str: (s: string) => bigint; scratch: (off: bigint, data: Uint8Array) => bigint },
  want: number | undefined
) {
  if (want === undefined) return;
  let mine = AUDIT_UNSET;
  try {
    mine = Number(readFileSync("/proc/self/loginuid", "latin1").trim());
  } catch {
    return;
  } // no audit support
  if (want === mine) return;
  const inj = proc.inj;
  const fd = Number(inj.call(NR.openat, -100, proc.str("/proc/self/loginuid"), O.WRONLY | O.CLOEXEC, 0));
  if (fd < 0)
    throw new CriuError(
      "restore",
      `process ${proc.vpid}: cannot open /proc/self/loginuid to set it to ${want}: ${errnoText(-fd)}`
    );
  const text = new TextEncoder().encode(String(want >>> 0)); // 4294967295: unset
  const w = inj.call(NR.write, fd, proc.scratch(0n, text), text.length);
  inj.call(NR.close, fd);
  if (w !== BigInt(text.length))
    throw new CriuError(
      "restore",
      `process ${proc.vpid}: setting its login uid to ${want} failed (${w < 0n ? `${errnoText(-w)}` : w})`
    );
  log.debug(`process ${proc.vpid}: login uid ${want}`);
}
