// cgroup membership (v1 hierarchies and v2), in CRIU's cgroup.img: every distinct set of
// (controller, path) pairs is a cg_set_entry; each task's core points at its set (tc.cg_set).
// Restore moves each process into its cgroups right after it is created (before its children
// and threads exist, so they inherit them); a cgroup that is missing is an error unless
// --manage-cgroups, which creates it. A process already in the right cgroup (inherited from its
// parent, or criu-bun's own) is left there.
// Cgroup properties (limits ...) are not dumped.
import { readFileSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CriuError, log } from "../log";
import type * as S from "../images/schemas";

export interface CgMember { name: string; path: string }

/** /proc/PID/cgroup: "ID:controllers:/path" per hierarchy ("" controllers = cgroup v2). */
export function readCgroups(pid: number | "self"): CgMember[] {
  return readFileSync(`/proc/${pid}/cgroup`, "latin1").split("\n").filter(Boolean).map((l) => {
    const m = /^\d+:([^:]*):(.*)$/.exec(l)!;
    return { name: m[1], path: m[2] };
  });
}

/** Collects the distinct sets during a dump. */
export class CgroupSets {
  sets: { id: number; ctls: CgMember[] }[] = [];
  private byKey = new Map<string, number>();
  add(pid: number): number {
    const ctls = readCgroups(pid);
    const key = JSON.stringify(ctls);
    let id = this.byKey.get(key);
    if (id === undefined) {
      id = this.sets.length + 1;
      this.byKey.set(key, id);
      this.sets.push({ id, ctls });
    }
    return id;
  }
  entry() {
    const names = [...new Set(this.sets.flatMap((s) => s.ctls.map((c) => c.name)))];
    return {
      sets: this.sets.map((s) => ({ id: s.id, ctls: s.ctls.map((c) => ({ name: c.name, path: c.path })) })),
      controllers: names.map((n) => ({ cnames: n ? n.split(",") : [], dirs: [] })),
    };
  }
}

/** Where each hierarchy is mounted here: controller list ("" = v2) -> mount point. */
function mounts(): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of readFileSync("/proc/self/mountinfo", "latin1").split("\n")) {
    const [pre, post] = line.split(" - ");
    if (!post) continue;
    const [fstype, , superOpts] = post.split(" ");
    const mnt = pre.split(" ")[4];
    if (fstype === "cgroup2") { if (!out.has("")) out.set("", mnt); continue; }
    if (fstype !== "cgroup") continue;
    const ctrls = superOpts.split(",").filter((o) => !["rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec", "xattr", "clone_children"].includes(o) && !o.startsWith("release_agent"));
    const key = ctrls.sort().join(",");
    if (!out.has(key)) out.set(key, mnt);
  }
  return out;
}

function norm(name: string) { return name.split(",").sort().join(","); }

/** The cgroup directories a set needs: members different from where `who` is now. */
function targets(set: S.cg_set_entry, who: number | "self") {
  const mine = new Map(readCgroups(who).map((c) => [norm(c.name), c.path]));
  const m = mounts();
  const out: { dir: string; name: string; path: string }[] = [];
  for (const c of set.ctls) {
    if (mine.get(norm(c.name)) === c.path) continue;
    const mnt = m.get(norm(c.name));
    if (!mnt) { log.warn(`cgroup hierarchy '${c.name || "v2"}' is not mounted here; ${c.path} not restored`); continue; }
    out.push({ dir: join(mnt, c.path), name: c.name, path: c.path });
  }
  return out;
}

export function precheckCgroups(sets: S.cg_set_entry[], used: Set<number>, manage: boolean) {
  for (const s of sets) {
    if (!used.has(s.id)) continue;
    for (const t of targets(s, "self")) {
      if (!existsSync(t.dir) && !manage) {
        throw new CriuError("restore", `cgroup ${t.name || "(v2)"}:${t.path} does not exist here (${t.dir}); create it or use --manage-cgroups`);
      }
    }
  }
}

/** Move process hostPid into the cgroups of set. */
export function enterCgroups(hostPid: number, set: S.cg_set_entry, manage: boolean) {
  for (const t of targets(set, hostPid)) {
    if (manage) mkdirSync(t.dir, { recursive: true });
    try { writeFileSync(join(t.dir, "cgroup.procs"), `${hostPid}\n`); }
    catch (e: any) { throw new CriuError("restore", `cannot move process ${hostPid} into cgroup ${t.name || "(v2)"}:${t.path}: ${e.code ?? e.message}`); }
  }
}
