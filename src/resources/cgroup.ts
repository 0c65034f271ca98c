// cgroup membership (v1 hierarchies and v2), in CRIU's cgroup.img: every distinct set of
// (controller, path) pairs is a cg_set_entry; each task's core points at its set (tc.cg_set).
// Restore moves each process into its cgroups right after it is created (before its children
// and threads exist, so they inherit them); a cgroup that is missing is an error unless
// --manage-cgroups, which creates it. A process already in the right cgroup (inherited from its
// parent, or criu-bun's own) is left there.
// Cgroup properties (limits ...) are not dumped.
import { readFileSync, existsSync, mkdirSync, rmdirSync, writeFileSync, readdirSync, realpathSync } from "../sys/fs";
import { join } from "../sys/path";
import { CriuError, log } from "../log";
import type * as S from "../images/schemas";
import { errnoText } from "../sys/errno";

interface CgMember {
  name: string;
  path: string;
}

/** /proc/PID/cgroup (a thread's: /proc/PID/task/TID/cgroup): "ID:controllers:/path" per hierarchy ("" controllers = cgroup v2). */
export function readCgroups(pid: number | "self", tid?: number): CgMember[] {
  return readFileSync(tid ? `/proc/${pid}/task/${tid}/cgroup` : `/proc/${pid}/cgroup`, "latin1")
    .split("\n")
    .filter(Boolean)
    .map((l) => {
      const m = /^\d+:([^:]*):(.*)$/.exec(l)!;
      return { name: m[1], path: m[2] };
    });
}

/**
 * Collects the distinct sets during a dump, numbered as CRIU numbers them: set 1 is the dumper's
 * own (inventory root_cg_set) and is never written; a task in it stays in the restorer's cgroups.
 * When every task is in set 1, there is no cgroup.img at all (as CRIU: "nothing to dump").
 */
export class CgroupSets {
  sets: { id: number; ctls: CgMember[] }[] = [];
  private byKey = new Map<string, number>();
  constructor() {
    this.add("self");
  }
  add(pid: number | "self", tid?: number): number {
    const ctls = readCgroups(pid, tid).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const key = JSON.stringify(ctls);
    let id = this.byKey.get(key);
    if (id === undefined) {
      id = this.sets.length + 1;
      this.byKey.set(key, id);
      this.sets.push({ id, ctls });
    }
    return id;
  }
  /** cgroup.img's entry, or undefined when every task is in the dumper's set. */
  entry() {
    const sets = this.sets.filter((s) => s.id !== ROOT_CG_SET);
    if (!sets.length) return undefined;
    const names = [...new Set(this.sets.flatMap((s) => s.ctls.map((c) => c.name)))];
    return {
      sets: sets.map((s) => ({ id: s.id, ctls: s.ctls.map((c) => ({ name: c.name, path: c.path })) })),
      // cgroup v2 is the controller named "" (one empty cname, as CRIU); dirs: the tasks' cgroups
      controllers: names.map((n) => {
        const paths = sets.flatMap((s) => s.ctls.filter((c) => c.name === n).map((c) => c.path));
        return {
          cnames: n.split(","),
          dirs: dirTree(paths),
          // as CRIU: a v1 hierarchy takes threads one by one (its tasks file); v2 where a cgroup of
          // the tree is threaded. CRIU 4.2's restore moves threads into their own sets only so
          isThreaded: n !== "" || paths.some((p) => threadedV2(p)),
        };
      }),
    };
  }
}

/** a cgroup v2 path whose cgroup.type is threaded (or domain threaded) */
function threadedV2(path: string): boolean {
  const mnt = mounts().get("");
  try {
    return !!mnt && /threaded/.test(readFileSync(join(mnt, path, "cgroup.type"), "latin1"));
  } catch {
    return false;
  }
}

/** The dumper's own cgroup set (inventory root_cg_set). */
export const ROOT_CG_SET = 1;

/** Cgroup paths as CRIU's nested cgroup_dir_entry list: a head's dir_name without its leading
 * '/', a child's relative to its parent. */
function dirTree(paths: string[]) {
  type D = { path: string; dirName: string; children: D[]; properties: never[] };
  const heads: D[] = [];
  for (const p of [...new Set(paths)].sort((a, b) => a.length - b.length)) {
    let list = heads,
      parent: D | undefined;
    for (;;) {
      const up = list.find((d) => d.path === "/" || p.startsWith(d.path + "/"));
      if (!up || up.path === p) break;
      parent = up;
      list = up.children;
    }
    if (list.some((d) => d.path === p)) continue;
    const dirName = parent ? p.slice(parent.path === "/" ? 1 : parent.path.length + 1) : p.slice(1);
    list.push({ path: p, dirName, children: [], properties: [] });
  }
  const strip = (d: D): S.InitOf<typeof S.cgroup_dir_entrySchema> => ({
    dirName: d.dirName,
    children: d.children.map(strip),
    properties: [],
  });
  return heads.map(strip);
}

/** A task's cgroup set: tc.cg_set (older images) or, as CRIU 4 writes it, the leader thread's
 * thread_core.cg_set. */
export function taskCgSet(core: S.core_entry | undefined): number | undefined {
  return core?.tc?.cgSet || core?.threadCore?.cgSet || undefined;
}

/** Where each hierarchy is mounted here: controller list ("" = v2) -> mount point. */
function mounts(): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of readFileSync("/proc/self/mountinfo", "latin1").split("\n")) {
    const [pre, post] = line.split(" - ");
    if (!post) continue;
    const [fstype, , superOpts] = post.split(" ");
    const mnt = pre.split(" ")[4];
    if (fstype === "cgroup2") {
      if (!out.has("")) out.set("", mnt);
      continue;
    }
    if (fstype !== "cgroup") continue;
    const ctrls = superOpts
      .split(",")
      .filter(
        (o) =>
          !["rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec", "xattr", "clone_children"].includes(o) &&
          !o.startsWith("release_agent")
      );
    const key = ctrls.sort().join(",");
    if (!out.has(key)) out.set(key, mnt);
  }
  return out;
}

function norm(name: string) {
  return name.split(",").sort().join(",");
}

/** The cgroup directories a set needs: members different from where `who` is now. */
function targets(set: S.cg_set_entry, who: number | "self") {
  const mine = new Map(readCgroups(who).map((c) => [norm(c.name), c.path]));
  const m = mounts();
  const out: { dir: string; name: string; path: string }[] = [];
  for (const c of set.ctls) {
    if (mine.get(norm(c.name)) === c.path) continue;
    const mnt = m.get(norm(c.name));
    if (!mnt) {
      log.warn(`cgroup hierarchy '${c.name || "v2"}' is not mounted here; ${c.path} not restored`);
      continue;
    }
    out.push({ dir: join(mnt, c.path), name: c.name, path: c.path });
  }
  return out;
}

export function precheckCgroups(sets: S.cg_set_entry[], used: Set<number>, manage: boolean) {
  for (const s of sets) {
    if (!used.has(s.id)) continue;
    for (const t of targets(s, "self")) {
      if (!existsSync(t.dir) && !manage) {
        throw new CriuError(
          "restore",
          `cgroup ${t.name || "(v2)"}:${t.path} does not exist here (${t.dir}); create it or use --manage-cgroups`
        );
      }
    }
  }
}

/**
 * Move process hostPid (or, `thread`, thread hostPid alone) into the cgroups of set. With manage,
 * missing cgroups are made, each directory made pushed on `made` (parents first), for
 * removeCgroups() should the restore fail.
 */
export function enterCgroups(hostPid: number, set: S.cg_set_entry, manage: boolean, made: string[], thread = false) {
  for (const t of targets(set, hostPid)) {
    if (manage && !existsSync(t.dir)) {
      const missing: string[] = [];
      for (let d = t.dir; !existsSync(d); d = d.slice(0, d.lastIndexOf("/"))) missing.unshift(d);
      mkdirSync(t.dir, { recursive: true });
      made.push(...missing);
      log.debug(`cgroup ${t.name || "(v2)"}:${t.path} made (${missing.join(", ")})`);
    }
    // a thread alone: a v1 hierarchy's tasks, a threaded v2 cgroup's cgroup.threads
    const file = thread ? (t.name ? "tasks" : "cgroup.threads") : "cgroup.procs";
    try {
      writeFileSync(join(t.dir, file), `${hostPid}\n`);
    } catch (e) {
      throw new CriuError(
        "restore",
        `cannot move ${thread ? "thread" : "process"} ${hostPid} into cgroup ${t.name || "(v2)"}:${t.path}: ${errnoText(e)}`
      );
    }
    if (thread) log.debug(`thread ${hostPid}: in cgroup ${t.name || "(v2)"}:${t.path}`);
  }
}

/**
 * A failed restore: the cgroups it made (enterCgroups' `made`) are removed, deepest first, once the
 * processes it put there are gone (a killed task leaves its cgroup as it exits: EBUSY until then).
 */
export function removeCgroups(made: string[], timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  for (const d of [...made].reverse()) {
    for (;;) {
      try {
        rmdirSync(d);
        log.debug(`cgroup ${d} removed (made by this restore)`);
        break;
      } catch (e) {
        if ((e as { code?: string }).code === "ENOENT") break;
        if ((e as { code?: string }).code !== "EBUSY" || Date.now() > deadline) {
          log.warn(`cannot remove cgroup ${d}, made by this restore: ${errnoText(e)}`);
          break;
        }
        Bun.sleepSync(5);
      }
    }
  }
  made.length = 0;
}

/**
 * criu's --freeze-cgroup (runc sends the container's cgroup): freeze it (v1 freezer.state, v2
 * cgroup.freeze) so no task in it can run or fork while the tree is seized, list every thread in
 * it and below, and thaw it again once they are seized (the caller does that with thaw()).
 */
/** The tids of a cgroup and its children (v1: tasks, v2: cgroup.threads). */
function cgroupTids(dir: string, v1: boolean): number[] {
  const tids: number[] = [];
  const walk = (d: string) => {
    const list = readFileSync(join(d, v1 ? "tasks" : "cgroup.threads"), "latin1")
      .split("\n")
      .filter(Boolean)
      .map(Number);
    tids.push(...list);
    for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(join(d, e.name));
  };
  walk(dir);
  return tids;
}

/** A task in a job-control stop (SIGSTOP and the like): 'T' in its stat, or, once frozen, asleep in do_signal_stop. */
function jobStopped(tid: number, frozen: boolean): boolean {
  try {
    if (!frozen) return /\) T /.test(readFileSync(`/proc/${tid}/stat`, "latin1"));
    return readFileSync(`/proc/${tid}/wchan`, "latin1").trim() === "do_signal_stop";
  } catch {
    return false;
  }
}

/**
 * Freeze a cgroup for the dump (criu's freeze_cgroup) and list its tasks. `stopped`: those in a
 * job-control stop, which the caller must not seize while the cgroup is frozen: the kernel's
 * PTRACE_SEIZE of a stopped task waits for it to move into the trace stop, which a frozen task
 * never does (runc checkpoint of a container holding a SIGSTOPped child hung there, CRIU 4.2's
 * too). A stopped task runs nothing, so it is seized after the thaw with nothing lost.
 */
export function freezeCgroup(path: string, timeoutMs = 10000): { tids: number[]; stopped: Set<number>; thaw(): void } {
  let dir: string;
  try {
    dir = realpathSync(path);
  } catch (e) {
    throw new CriuError("dump", `freeze_cgroup ${path}: ${errnoText(e)}`);
  }
  if (!dir.startsWith("/sys/fs/cgroup/"))
    throw new CriuError("dump", `freeze_cgroup ${path} is not a cgroup under /sys/fs/cgroup`);
  const v1 = existsSync(join(dir, "freezer.state"));
  if (!v1 && !existsSync(join(dir, "cgroup.freeze")))
    throw new CriuError("dump", `freeze_cgroup ${path} has neither freezer.state (v1) nor cgroup.freeze (v2)`);
  const file = join(dir, v1 ? "freezer.state" : "cgroup.freeze");
  const thaw = () => {
    try {
      writeFileSync(file, v1 ? "THAWED" : "0");
      log.info(`cgroup ${dir} thawed`);
    } catch (e) {
      log.warn(`cannot thaw ${dir}: ${errnoText(e)}`);
    }
  };
  const frozen = () =>
    v1
      ? readFileSync(file, "latin1").trim() === "FROZEN"
      : /^frozen 1$/m.test(readFileSync(join(dir, "cgroup.events"), "latin1"));
  const stopped = new Set<number>();
  try {
    for (const tid of cgroupTids(dir, v1)) if (jobStopped(tid, false)) stopped.add(tid);
  } catch (e) {
    throw new CriuError("dump", `cannot list the tasks of cgroup ${dir}: ${errnoText(e)}`);
  }
  try {
    writeFileSync(file, v1 ? "FROZEN" : "1");
  } catch (e) {
    throw new CriuError("dump", `cannot freeze cgroup ${dir}: ${errnoText(e)}`);
  }
  const deadline = Date.now() + timeoutMs;
  while (!frozen()) {
    if (Date.now() > deadline) {
      thaw();
      throw new CriuError("dump", `cgroup ${dir} did not freeze within ${timeoutMs} ms`);
    }
    Bun.sleepSync(1);
  }
  let tids: number[];
  try {
    tids = cgroupTids(dir, v1);
  } catch (e) {
    thaw();
    throw e;
  }
  for (const tid of tids) if (!stopped.has(tid) && jobStopped(tid, true)) stopped.add(tid);
  for (const tid of stopped) if (!tids.includes(tid)) stopped.delete(tid);
  log.info(
    `cgroup ${dir} frozen with ${tids.length} thread(s)${stopped.size ? `, ${stopped.size} of them stopped (seized after the thaw): ${[...stopped].join(", ")}` : ""}`
  );
  return { tids, stopped, thaw };
}

/** A new root for the tree's cgroups (criu's cg_root / --cgroup-root): ctrl undefined = every hierarchy not named. */
export interface CgRoot {
  ctrl?: string;
  path: string;
}

/**
 * cg_root: the tree comes back under other cgroups (runc restoring a container under a new name
 * passes the new container's cgroup per controller). In each hierarchy, the root process's dumped
 * cgroup is the old root: every set's path there, which must be it or below it, moves under the
 * new root. A path outside the old root is refused: it could not go anywhere exact.
 */
export function applyCgRoots(
  sets: Map<number, S.cg_set_entry>,
  rootSet: number | undefined,
  roots: CgRoot[],
  restorerSet?: number
) {
  if (!roots.length || rootSet === undefined || rootSet === restorerSet || !sets.has(rootSet)) {
    if (roots.length) log.info(`cg_root: the root process is in the restorer's own cgroups; nothing to move`);
    return;
  }
  for (const r of roots)
    if (!r.path.startsWith("/"))
      throw new CriuError("restore", `cg_root ${r.ctrl ?? ""}:${r.path}: the path must be absolute`);
  const rootCtls = sets.get(rootSet)!.ctls;
  const pick = (name: string) =>
    roots.find((r) => r.ctrl !== undefined && (r.ctrl === name || (name !== "" && name.split(",").includes(r.ctrl)))) ??
    roots.find((r) => r.ctrl === undefined);
  for (const c of rootCtls) {
    const r = pick(c.name);
    if (!r) continue;
    const old = c.path,
      neu = r.path.replace(/\/+$/, "") || "/";
    for (const s of sets.values()) {
      if (s.id === restorerSet) continue; // the restorer's own cgroups (root_cg_set), where runc put criu
      for (const x of s.ctls) {
        if (x.name !== c.name) continue;
        if (x.path !== old && !(old === "/" ? x.path.startsWith("/") : x.path.startsWith(old + "/"))) {
          throw new CriuError(
            "restore",
            `cg_root ${c.name || "(v2)"}:${neu}: cgroup set ${s.id} has ${x.path}, outside the root process's cgroup ${old}`
          );
        }
        const rest = x.path.slice(old === "/" ? 0 : old.length);
        x.path = neu === "/" ? rest || "/" : neu + (rest === "/" ? "" : rest);
      }
    }
    log.info(`cg_root: ${c.name || "(v2)"} cgroups under ${old} go under ${neu}`);
  }
}
