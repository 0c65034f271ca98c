// The workloads verify themselves correctly with nothing in between ready and go, and their
// checks can fail (--selftest-corrupt damages state after ready, as a broken restore would).

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import {
  buildWorkloads,
  cleanup,
  criuBunCommand,
  runWorkload,
  startWorkload,
  trigger,
  waitResult,
  workloadNames,
  WORKLOADS_DIR,
  waitUntil,
  procState,
} from "./harness";

beforeAll(async () => {
  await buildWorkloads();
}, 60_000);

afterAll(() => cleanup());

const passCases: [string, string[]][] = [
  ["counter", []],
  ["threads", []],
  ["threads", ["2"]],
  ["block", ["read"]],
  ["block", ["read-eintr"]],
  ["block", ["nanosleep"]],
  ["block", ["futex"]],
  ["block", ["poll"]],
  ["signals", []],
  ["files", []],
  ["deleted", []],
  ["deleted", ["named"]],
  ["spin", []],
  ["spin", ["32", "--pattern=random"]],
  ["spin", ["16", "--pattern=heap"]],
  ["regs", []],
  ["eventfd", []],
  ["timerfd", []],
  ["signalfd", []],
  ["epoll", []],
  ["inotify", []],
  ["memfd", []],
  ["unix", []],
  ["netlink", []],
  ["tree", []],
  ["shared", []],
  ["sysvshm", []],
  ["ipcobjects", []],
  ["tcpserver", ["7199"]],
  ["fifo", []],
  ["extunix", []],
  ["extunix", ["streams"]],
  ["prctlfix", ["tsc"]],
  ["prctlfix", ["sud"]],
  ["mqueue", []],
  ["seccomp", []],
  ["forky", []],
  ["pipes", []],
  ["notifyfix", ["inomany"]],
  ["clonefiles", []],
  ["locks", []],
  ["refuse", ["fown"]],
  ["exact", ["peergone"]],
  ["unixtree", ["server"]],
  ["dirty", ["8"]],
  ["large", ["400", "200"]],
  ["inetsk", ["opts"]],
  ["unixsk", ["dgram"]],
  ["unixfix", ["opts"]],
  ["lazy", ["8"]],
  ["cowdrop", []],
  ["fdstate", ["mqzero"]],
  ["fdstate", ["mqfull"]],
  ["fdstate", ["tfdflags"]],
  ["fdstate", ["ofd"]],
  ["taskfix", ["sched"]],
  ["freezefix", ["stoppend"]],
  ["memsess", ["noreserve"]],
  ["memsess", ["shanon"]],
  ["memsess", ["zlead"]],
  ["memsess", ["zleadalive"]],
  ["memsess", ["pgrporphan"]],
  ["memsess", ["pgrpalive"]],
  ["memsess", ["pers"]],
  ["memsess", ["persbits"]],
  ["memfix", ["account"]],
  ["memfix", ["accountempty"]],
  ["memfix", ["roshared"]],
  ["memfix", ["shanon"]],
  ["memfix", ["lockonfault"]],
  ["memfix", ["lockfuture"]],
  ["memfix", ["lockfutureonfault"]],
  ["memfix", ["sealed"]],
  ["memfix", ["vdsomove"]],
  ["netfix", ["shared"]],
  ["netfix", ["udpqueue"]],
  ["mntfix", ["fgpgrp"]],
  ["mntfix", ["fggone"]],
  ["mntfix", ["slavegone"]],
  ["mntfix", ["baud"]],
  ["mntfix", ["mqloose"]],
  ["mntfix", ["thrcg"]],
  ["mntfix", ["thrcg2"]],
  ["mntct.sh", ["ovm"]],
  ["mntct.sh", ["hidden"]],
  ["mntct.sh", ["xattr"]],
];

describe("workloads pass without a dump", () => {
  test("every workload source has a pass case", () => {
    const covered = new Set(passCases.map(([n]) => n));
    // the workloads of the DIR/ready, go, result protocol (wl.h); a helper program built for a
    // container (ptyns.c, run by mounts.test.ts inside its rootfs) speaks its own
    const protocol = workloadNames().filter((n) =>
      readFileSync(join(WORKLOADS_DIR, `${n}.c`), "utf8").includes('#include "wl.h"')
    );
    expect(protocol.length).toBeGreaterThan(30);
    expect(protocol.filter((n) => !covered.has(n))).toEqual([]);
  });

  for (const [name, args] of passCases) {
    test(`${name} ${args.join(" ")}`, async () => {
      const r = await runWorkload(name, args);
      if (!r.pass) console.error(r.text);
      expect(r.summary).toBe("PASS");
      expect(r.text).toContain(`pid=${r.workload.pid}`);
    });
  }
});

// A dump freezes the task (and interrupts its syscall); the workloads must not mind that.
describe("workloads tolerate being stopped and continued", () => {
  for (const [name, args] of passCases) {
    if (name === "threads" && args.length) continue;
    test(`${name} ${args.join(" ")} after SIGSTOP/SIGCONT`, async () => {
      const r = await runWorkload(name, args, {
        between: async (w) => {
          process.kill(w.pid, "SIGSTOP");
          await waitUntil("SIGSTOP to stop it", () => procState(w.pid) === "T");
          process.kill(w.pid, "SIGCONT");
          await waitUntil("SIGCONT to wake it", () => procState(w.pid) !== "T");
        },
      });
      if (!r.pass) console.error(r.text);
      expect(r.summary).toBe("PASS");
    });
  }
});

// [workload, args, substring expected in the FAIL line]
const failCases: [string, string[], string][] = [
  ["counter", ["--selftest-corrupt=heap"], "heap differs"],
  ["counter", ["--selftest-corrupt=tls"], "TLS value"],
  ["counter", ["--selftest-corrupt=guard"], "guard page perms"],
  ["counter", ["--selftest-corrupt=zero"], "zero region"],
  ["threads", ["4", "--selftest-corrupt=stack"], "stack pattern differs"],
  ["threads", ["4", "--selftest-corrupt=tls"], "TLS value"],
  ["block", ["read", "--selftest-corrupt"], "before the wake-up signal"],
  ["block", ["nanosleep", "--selftest-corrupt"], "before the wake-up signal"],
  ["block", ["futex", "--selftest-corrupt"], "before the wake-up signal"],
  ["signals", ["--selftest-corrupt=flags"], "SIGUSR1 sa_flags"],
  ["signals", ["--selftest-corrupt=pending"], "SIGUSR2 is not pending"],
  ["signals", ["--selftest-corrupt=timer"], "POSIX timer interval"],
  ["files", ["--selftest-corrupt=offset"], "rw offset 12346"],
  ["files", ["--selftest-corrupt=log"], "log line"],
  ["files", ["--selftest-corrupt=cloexec"], "FD_CLOEXEC"],
  ["files", ["--selftest-corrupt=dup"], "is another file"],
  ["deleted", ["--selftest-corrupt"], "offset 1001"],
  ["deleted", ["named", "--selftest-corrupt=named"], "named: the fd is inode"],
  ["cowdrop", ["--selftest-corrupt"], "page1_zero=0"],
  ["dirty", ["8", "--selftest-corrupt"], "pages wrong"],
  ["large", ["400", "200", "--selftest-corrupt=fd"], "is gone"],
  ["spin", ["--selftest-corrupt"], "went backwards"],
  ["spin", ["8", "--selftest-corrupt"], "memory hash"],
  ["regs", ["--selftest-corrupt=gpr"], "r13"],
  ["regs", ["--selftest-corrupt=vec"], "mm7"],
  ["regs", ["--selftest-corrupt=mxcsr"], "mxcsr"],
  ["tree", ["--selftest-corrupt"], "report ignored"],
  ["shared", ["--selftest-corrupt"], "child never answered"],
  ["sysvshm", ["--selftest-corrupt"], "A's contents changed"],
  ["ipcobjects", ["--selftest-corrupt"], "Q: 4 messages, want 5"],
  ["seccomp", ["--selftest-corrupt"], "seccomp mode 0"],
  ["forky", ["--selftest-corrupt"], "child 0"],
  ["pipes", ["--selftest-corrupt"], "p1 data differs"],
  ["clonefiles", ["--selftest-corrupt"], "sharing child failed"],
  ["tcpserver", ["7198", "--expect=1"], "accepted 0 clients"],
  ["fifo", ["--selftest-corrupt"], "f1 data"],
  ["extunix", ["--selftest-corrupt"], "queued echo:ping1 missing"],
  ["mqueue", ["--selftest-corrupt"], "q1 attributes"],
  ["locks", ["--selftest-corrupt"], "POSIX lock on b"],
  ["fdstate", ["mqzero", "--selftest-corrupt"], "curmsgs 6, want 8 64 7"],
  ["fdstate", ["mqfull", "--selftest-corrupt"], "received 'm2/1 X/1 '"],
  ["fdstate", ["tfdflags", "--selftest-corrupt"], "settime flags 00, want 03"],
  ["fdstate", ["ofd", "--selftest-corrupt"], "lk: the OFD write lock on [5,10) is gone"],
  ["memsess", ["noreserve", "--selftest-corrupt"], "bytes of the NORESERVE region differ"],
  ["memsess", ["zlead", "--selftest-corrupt"], "wrong session, group or parent"],
  ["memsess", ["pers", "--selftest-corrupt"], "personality 0x0, want 0x1060000"],
  ["memsess", ["pgrporphan", "--selftest-corrupt"], "wrong group"],
  ["ptypair.py", ["--selftest-corrupt"], "the never unlocked master is no longer locked"],
  ["freezefix", ["stoppend", "--selftest-corrupt"], "child state"],
  ["freezefix", ["strict", "--selftest-corrupt"], "thread seccomp mode , want 1"],
  ["freezefix", ["seckill", "131", "--selftest-corrupt"], "errno 78, want 77"],
  ["freezefix", ["vfork", "--selftest-corrupt"], "shared variable 5, want 7"],
  ["freezefix", ["leaderexit", "--selftest-corrupt"], "stopped counting"],
  ["mntfix", ["fgpgrp", "--selftest-corrupt"], "foreground group of"],
  ["mntfix", ["slavegone", "--selftest-corrupt"], "expected POLLHUP, EIO"],
  ["mntfix", ["baud", "--selftest-corrupt"], "speeds 38400 in 38400 out"],
  ["mntfix", ["mqloose", "--selftest-corrupt"], "queue /mntfix: opened 0"],
  ["mntfix", ["thrcg", "--selftest-corrupt"], "in cpu cgroup"],
  ["mntfix", ["thrcg2", "--selftest-corrupt"], "in v2 cgroup"],
  ["mntct.sh", ["ovm", "--selftest-corrupt"], "under the mount reads upper"],
  ["mntct.sh", ["hidden", "--selftest-corrupt"], "fd 4 reads"],
  ["mntct.sh", ["xattr", "--selftest-corrupt"], "/b/f reads"],
];

describe("workload checks can fail", () => {
  for (const [name, args, why] of failCases) {
    test(`${name} ${args.join(" ")}`, async () => {
      // Each workload damages its state after ready and before it looks for go, in the same flow
      // (threads and children too), so go can follow ready at once. block's damage is an early
      // SIGALRM 100 ms after ready that ends its blocking call: it reports on its own, untriggered.
      const w = await startWorkload(name, args, { waitBlocked: false });
      if (name !== "block") trigger(w);
      const r = await waitResult(w, 10_000);
      expect(r.pass).toBe(false);
      expect(r.summary).toStartWith("FAIL: ");
      expect(r.summary).toContain(why);
    });
  }

  test("waitResult reports a workload that died without a result", async () => {
    const w = await startWorkload("spin", []);
    process.kill(w.pid, "SIGKILL");
    const r = await waitResult(w, 5000);
    expect(r.pass).toBe(false);
    expect(r.summary).toContain("died without writing a result");
  });
});

test("startWorkload captures stderr on request and gives a clear error when setup fails", async () => {
  // block with an unknown mode writes FAIL and exits before ready.
  const err = await startWorkload("block", ["no-such-mode"], { stderr: "file" }).catch((e: Error) => e);
  expect(err).toBeInstanceOf(Error);
  expect((err as Error).message).toContain("before ready");
  expect((err as Error).message).toContain("unknown mode 'no-such-mode'");
  const w = await startWorkload("spin", [], { stderr: "file" });
  expect(existsSync(join(w.dir, "stderr"))).toBe(true);
  expect(readFileSync(join(w.dir, "ready"), "utf8")).toBe(`${w.pid}\n`);
  trigger(w);
  expect((await waitResult(w)).pass).toBe(true);
});

test("criuBunCommand points at the executable or src/main.ts", () => {
  const cmd = criuBunCommand();
  expect(cmd.at(-1)).toMatch(/criu-bun$|src\/main\.ts$/);
});
