// Running a piece of criu-bun inside another process's network (or IPC) namespace. setns() changes the
// calling thread only, and every FFI call runs on the main JS thread, so sockets (netlink for
// nf_tables and sock_diag) made inside fn belong to that namespace; we switch back right after.
import { readlinkSync } from "./fs";
import { syscall } from "./syscall";
import { NR } from "./nr";
import { CLONE } from "./flags";
import { openFd, closeFd, O } from "./mem";
import { SysError } from "./errno";

const CLONE_NEW = { net: CLONE.NEWNET, ipc: CLONE.NEWIPC } as const;

/** Run fn with the main thread in process pid's namespace of that kind, then come back. */
export function withNs<T>(pid: number, kind: "net" | "ipc", fn: () => T): T {
  if (readlinkSync(`/proc/${pid}/ns/${kind}`) === readlinkSync(`/proc/thread-self/ns/${kind}`)) return fn();
  const home = openFd(`/proc/thread-self/ns/${kind}`, O.RDONLY | O.CLOEXEC);
  const there = openFd(`/proc/${pid}/ns/${kind}`, O.RDONLY | O.CLOEXEC);
  try {
    const r = syscall(NR.setns, there, CLONE_NEW[kind]);
    if (r < 0) throw new SysError(`setns into the ${kind} namespace of ${pid}`, -r);
    try {
      return fn();
    } finally {
      const b = syscall(NR.setns, home, CLONE_NEW[kind]);
      if (b < 0) throw new SysError(`setns back to criu-bun's ${kind} namespace`, -b);
    }
  } finally {
    closeFd(home);
    closeFd(there);
  }
}

export function withNetns<T>(pid: number, fn: () => T): T {
  return withNs(pid, "net", fn);
}

/** Interface names of a process's network namespace (/proc/PID/net/dev). */
export function netdevs(pid: number): string[] {
  return require("./fs")
    .readFileSync(`/proc/${pid}/net/dev`, "latin1")
    .split("\n")
    .slice(2)
    .map((l: string) => l.split(":")[0].trim())
    .filter(Boolean);
}
