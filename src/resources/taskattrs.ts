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
import { refuse } from "./unsupported";

const AUDIT_UNSET = 0xffffffff;
/** The personality bits linux/personality.h defines: PER_MASK (0xff) and the flags UNAME26 (0x20000)
 *  to ADDR_LIMIT_3GB (0x8000000). */
const PERSONALITY_DEFINED = 0x0ffe00ff;

/**
 * Sessions and process groups restore can make exactly (CRIU's rule, checked at dump and again at
 * restore): each led by a process of the tree (made with setsid and setpgid), or, with
 * --shell-job, the root's own (they become criu-bun's, the job's). The first process whose session
 * or group is neither, and which of the two; pids, pgids and sids as the tree's namespace numbers them.
 */
export function unledGroup<T extends { pid: number; pgid: number; sid: number }>(
  tasks: T[],
  shellJob: boolean,
  leaderGone: (pgid: number) => boolean = () => false
): { t: T; what: "session" | "group" } | undefined {
  const inTree = new Set(tasks.map((t) => t.pid));
  const root = tasks[0];
  for (const t of tasks) {
    if (!inTree.has(t.sid) && !(shellJob && t.sid === root.sid)) return { t, what: "session" };
    if (!inTree.has(t.pgid) && !(shellJob && t.pgid === root.pgid) && !leaderGone(t.pgid)) return { t, what: "group" };
  }
  return undefined;
}

/**
 * Process groups of the tree whose leader is gone (exited; its number names only the group now),
 * each with its first member. Restore makes them as CRIU does: the first member forks a helper
 * with the group's number, which makes the group (setpgid), the members join it, and the helper
 * exits and is reaped by that member. (With --shell-job the root's group is criu-bun's: not one of them.)
 */
export function orphanGroups<T extends { pid: number; pgid: number }>(tasks: T[], shellJob: boolean): Map<number, T> {
  const inTree = new Set(tasks.map((t) => t.pid));
  const out = new Map<number, T>();
  for (const t of tasks)
    if (!inTree.has(t.pgid) && !(shellJob && t.pgid === tasks[0].pgid) && !out.has(t.pgid)) out.set(t.pgid, t);
  return out;
}

/** A process of the tree as sessionCreators sees it (pids as the tree's namespace numbers them). */
interface SessionTask {
  pid: number;
  ppid: number;
  sid: number;
  zombie: boolean;
  /** PR_SET_CHILD_SUBREAPER */
  subreaper: boolean;
}

/**
 * The process of the tree that must create each one so that it is born in its session (a session
 * can only be inherited: setsid makes a new one, setpgid stays inside one), checked at dump and
 * again at restore before anything is made. A process is made by its parent, except one whose
 * session is neither its own nor its parent's: its parent in that session died and it was handed
 * to a child subreaper. Restore makes it from its session's leader when that leader is a zombie of
 * the tree: the leader forks it (in the leader's session and group) and then exits as its image
 * says, which hands it to the nearest living child subreaper above the leader, or the init of the
 * PID namespace; that must be its parent of the images. Anything else (a live leader, a leader
 * whose exit would give it to another process) cannot be made exactly: the first such process and
 * why. creators: pid -> the pid that creates it (the root: none).
 */
export function sessionCreators<T extends SessionTask>(
  tasks: T[]
): { creators: Map<number, number> } | { t: T; why: string } {
  const byPid = new Map(tasks.map((t) => [t.pid, t]));
  const creators = new Map<number, number>();
  const root = tasks[0];
  for (const t of tasks) {
    if (t === root) continue;
    const p = byPid.get(t.ppid);
    if (!p || t.sid === t.pid || t.sid === p.sid || !byPid.has(t.sid)) {
      creators.set(t.pid, t.ppid);
      continue;
    }
    const leader = byPid.get(t.sid)!;
    if (!leader.zombie)
      return {
        t,
        why: `session ${t.sid}, which its parent ${t.ppid} is not in, is led by process ${t.sid}, which is alive`,
      };
    // the kernel's choice when the leader exits: the nearest living child subreaper above it, else
    // the PID namespace's init (the tree's root only when the tree is a PID namespace of its own)
    let reaper: T | undefined;
    const seen = new Set<number>();
    for (let a = byPid.get(leader.ppid); a && a !== leader && !seen.has(a.pid); a = byPid.get(a.ppid)) {
      seen.add(a.pid);
      if (a.subreaper && !a.zombie) {
        reaper = a;
        break;
      }
    }
    if (!reaper && root.pid === 1) reaper = root;
    if (reaper !== p)
      return {
        t,
        why: `session ${t.sid}, which its parent ${t.ppid} is not in, is led by zombie ${t.sid}, whose exit would hand it to ${reaper ? `process ${reaper.pid}` : "a process outside the tree"}, not to ${t.ppid}`,
      };
    creators.set(t.pid, leader.pid);
  }
  return { creators };
}

/** PR_SET_CHILD_SUBREAPER of a process, right after its creation: before it forks its children (so
 *  that they inherit has_child_subreaper, and the zombies among them hand their children to it). */
export function restoreSubreaperEarly(proc: { vpid: number; inj: Injector }, tc: S.task_core_entry | undefined) {
  if (!tc?.childSubreaper) return;
  proc.inj.ok("prctl(PR_SET_CHILD_SUBREAPER)", NR.prctl, PR.SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  log.debug(`taskattrs: process ${proc.vpid}: child subreaper before its children are made`);
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
  if ((personality & ~PERSONALITY_DEFINED) >>> 0)
    refuse("dump", `process ${pid}`, "personality", `0x${personality.toString(16)}`);
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

/**
 * The personality the images mean, checked when they are loaded (before anything is made). CRIU
 * 4.2 reads /proc/PID/personality (the kernel prints "%08x") with atoi: tc.personality holds the
 * hex digits read as a decimal number (0x01060000 -> 1060000), up to the first digit a-f, which
 * ends atoi's reading and is lost with every digit after it (a personality with such a digit: a
 * persona of 0x0a..0x0f or flag nibbles 0xa..0xf, cannot be told from the images; EXACT-OR-REFUSED
 * 16). CRIU's restore does not set it. criu-bun writes the value itself (inventory all_images
 * marks its images). Either way a value with bits Linux does not define (outside PER_MASK and the
 * flags of linux/personality.h) is refused, in one line: it is not a personality a process had.
 */
export function personalityFromImages(tc: S.task_core_entry, criuBun: boolean, where: string) {
  let v = tc.personality >>> 0;
  if (!criuBun && v) {
    const digits = v.toString(10);
    const hexv = digits.length <= 8 ? parseInt(digits, 16) : Number.NaN;
    if (Number.isNaN(hexv) || (hexv & ~PERSONALITY_DEFINED) >>> 0)
      throw new CriuError(
        "restore",
        `${where}: personality ${v} is not CRIU's reading of a personality Linux defines (as hex digits 0x${digits})`
      );
    log.debug(
      `taskattrs: ${where}: personality ${v} (CRIU's decimal reading of its hex digits) is 0x${hexv.toString(16)}`
    );
    v = hexv;
  } else if ((v & ~PERSONALITY_DEFINED) >>> 0)
    throw new CriuError(
      "restore",
      `${where}: personality 0x${v.toString(16)} has bits Linux does not define (0x${((v & ~PERSONALITY_DEFINED) >>> 0).toString(16)})`
    );
  tc.personality = v;
}

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
