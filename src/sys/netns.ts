// Running a piece of criu-bun inside another process's network namespace. setns() changes the
// calling thread only, and every FFI call runs on the main JS thread, so sockets (netlink for
// nf_tables and sock_diag) made inside fn belong to that namespace; we switch back right after.
import { readlinkSync } from "node:fs";
import { syscall } from "./syscall";
import { NR } from "./nr";
import { openFd, closeFd, O } from "./mem";
import { SysError } from "./errno";

const CLONE_NEWNET = 0x40000000;

export function withNetns<T>(pid: number, fn: () => T): T {
  if (readlinkSync(`/proc/${pid}/ns/net`) === readlinkSync("/proc/thread-self/ns/net")) return fn();
  const home = openFd("/proc/thread-self/ns/net", O.RDONLY | O.CLOEXEC);
  const there = openFd(`/proc/${pid}/ns/net`, O.RDONLY | O.CLOEXEC);
  try {
    const r = syscall(NR.setns, there, CLONE_NEWNET);
    if (r < 0) throw new SysError(`setns into the network namespace of ${pid}`, -r);
    try { return fn(); } finally {
      const b = syscall(NR.setns, home, CLONE_NEWNET);
      if (b < 0) throw new SysError("setns back to criu-bun's network namespace", -b);
    }
  } finally { closeFd(home); closeFd(there); }
}

/** Interface names of a process's network namespace (/proc/PID/net/dev). */
export function netdevs(pid: number): string[] {
  return require("node:fs").readFileSync(`/proc/${pid}/net/dev`, "latin1").split("\n").slice(2)
    .map((l: string) => l.split(":")[0].trim()).filter(Boolean);
}
