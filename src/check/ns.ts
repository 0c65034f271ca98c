// Namespace, cgroup and audit probes (all read-only except loginuid, rewritten to its own value).
import { existsSync } from "../sys/fs";
import { syscall, addr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { PR } from "../sys/flags";
import { errnoText } from "../sys/errno";
import { readLink, readStatus, readText } from "../sys/proc";
import { openFd, closeFd, O } from "../sys/mem";
import { Missing, need, sys, type Probe } from "./probe";

function nsLink(kind: string): string {
  const p = `/proc/self/ns/${kind}`;
  need(existsSync(p), `${p} is missing`);
  const l = readLink(p);
  need(l.startsWith(`${kind}:[`), `${p} links to ${l}`);
  return l;
}

/** user namespaces: /proc/self/ns/user, and PR_SET_MM_MAP which restore needs inside one. */
function userns(): string {
  const l = nsLink("user");
  const size = new Uint32Array(1);
  sys("prctl(PR_SET_MM_MAP_SIZE)", NR.prctl, PR.SET_MM, PR.SET_MM_MAP_SIZE, addr(size), 0, 0);
  return l;
}

function cgroupns(): string {
  return nsLink("cgroup");
}

/** NSpid in /proc/PID/status: our PID in every nested PID namespace, innermost last. */
function nsPid(): string {
  const v = readStatus(process.pid).NSpid;
  need(v, "/proc/PID/status has no NSpid");
  const ids = v.split(/\s+/).map(Number);
  need(ids[ids.length - 1] === process.pid, `NSpid ${v} does not end with our PID ${process.pid}`);
  return v;
}

/** A cgroup2 hierarchy is mounted and we have a place in it (the "0::" line). */
function cgroupV2(): string {
  const mine = readText("/proc/self/cgroup")
    .split("\n")
    .find((l) => l.startsWith("0::"));
  need(mine, "/proc/self/cgroup has no cgroup v2 line");
  const mnt = readText("/proc/self/mountinfo")
    .split("\n")
    .map((l) => l.split(" "))
    .find((f) => f[f.indexOf("-") + 1] === "cgroup2");
  need(mnt, "no cgroup2 file system is mounted");
  const dir = mnt[4].replace(/\\040/g, " ");
  need(existsSync(`${dir}/cgroup.controllers`), `${dir}/cgroup.controllers is missing`);
  return `${mine.slice(3)} under ${dir}`;
}

/** loginuid: readable, and writable by us (rewritten with its own value). */
function loginuid(): string {
  need(existsSync("/proc/self/loginuid"), "/proc/self/loginuid is missing (no CONFIG_AUDITSYSCALL)");
  const v = readText("/proc/self/loginuid").trim();
  need(/^\d+$/.test(v), `loginuid reads ${v}`);
  let fd: number;
  try {
    fd = openFd("/proc/self/loginuid", O.WRONLY | O.CLOEXEC);
  } catch (e) {
    throw new Missing((e as Error).message);
  }
  try {
    const b = Buffer.from(v);
    const w = syscall(NR.write, fd, addr(b), b.length);
    need(w === b.length, `writing loginuid: ${w < 0 ? errnoText(-w) : w}`);
  } finally {
    closeFd(fd);
  }
  need(readText("/proc/self/loginuid").trim() === v, "loginuid changed");
  return v === "4294967295" ? "unset" : v;
}

export const NS_PROBES: Probe[] = [
  { name: "ns_pid", basic: false, desc: "PIDs in nested PID namespaces", run: nsPid },
  { name: "userns", basic: false, desc: "user namespaces", run: userns },
  { name: "cgroupns", basic: false, desc: "cgroup namespaces", run: cgroupns },
  { name: "cgroup_v2", basic: false, desc: "cgroup v2 (--manage-cgroups)", run: cgroupV2 },
  { name: "loginuid", basic: false, desc: "restore the audit login uid", run: loginuid },
];
