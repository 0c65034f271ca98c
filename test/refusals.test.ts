// Exact or refused: for every entry of src/resources/unsupported.ts a process holding it is
// started (test/workloads/refuse.c MODE), and `dump` must fail with one line naming the process
// and the resource, leave the process running, and leave the state it holds as it was (the
// workload checks it at go). The fd-kind registry and the refusal list together cover every
// fd_types value, so a new kind cannot appear without one of them deciding about it.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  closeSync,
  constants,
  existsSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { buildWorkloads, cleanup, startWorkload, trigger, waitResult, isAlive, criuBun, runWorkload } from "./harness";
import { imagesDir, cleanupImages } from "./engine-helpers";
import {
  UNSUPPORTED,
  FD_TYPES_REFUSED,
  FD_TYPES_NOT_FILES,
  ANON_REFUSED,
  type UnsupportedKey,
} from "../src/resources/unsupported";
import { FD_KINDS } from "../src/resources/kinds";
import { FD_TYPE } from "../src/resources/files";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
const extPids: number[] = [];
afterAll(() => {
  for (const p of extPids)
    try {
      process.kill(p, "SIGKILL");
    } catch {}
  cleanup();
  cleanupImages();
});

/** a thread of PID other than its leader is there and not a zombie */
const threadsRun = (pid: number) =>
  readdirSync(`/proc/${pid}/task`).some((t) => Number(t) !== pid && isAlive(Number(t)));

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const keys = Object.keys(UNSUPPORTED) as UnsupportedKey[];
/** entries held by another workload than refuse.c: [workload, mode, extra dump options] */
const OTHER: Partial<Record<UnsupportedKey, [string, string, string[]]>> = {
  "inet-kind": ["inetsk", "mptcp", []],
  "inet-connected-raw": ["inetsk", "rawconn", []],
  "sock-error": ["inetsk", "sockerr", []],
  "sockopt": ["inetsk", "lockfilter", []],
  "tcp-half-closed": ["inetsk", "halfest", ["--tcp-established"]],
  "tcp-in-flight": ["inetsk", "inflight", []],
  "inet-queue": ["netfix", "udpqueue", []],
  "inet-multicast": ["netfix", "mcast", []],
  "unix-in-flight": ["unixsk", "inflight", []],
  "unix-oneway-queue": ["unixsk", "onewayq", []],
  "unix-queue-named-sender": ["extunix", "named", ["--ext-unix-sk"]],
  "unix-connection-name": ["unixsk", "accname", []],
  "unix-ext-peer": ["extunix", "streams", ["--ext-unix-sk"]],
  "unkept-state": ["prctlfix", "tsc", []],
  "mqueue-full": ["fdstate", "mqfull", []],
  "inotify-queued": ["notifyfix", "inoqueue", []],
  "epoll-oneshot-fired": ["notifyfix", "oneshotfired", []],
  "pipe-packets": ["notifyfix", "pipepkt", []],
  "unix-queue-cmsg": ["unixfix", "passcred", []],
  "unix-oob": ["unixfix", "oob", []],
  "sched-deadline": ["taskfix", "deadline", []],
  "dumpable-suid": ["taskfix", "suiddump", []],
  "posix-timer-clock": ["taskfix", "threadclock", []],
  "sigpending-rlimit": ["taskfix", "sigpend", []],
  "vfork": ["freezefix", "vfork", []],
  "leader-exited": ["freezefix", "leaderexit", []],
  "session-not-parents": ["memsess", "zleadalive", []],
  "personality": ["memsess", "persbits", []],
  "pgrp-leader-gone": ["memsess", "pgrpalive", []],
  "sealed": ["memfix", "sealed", []],
  "vdso-layout": ["memfix", "vdsomove", []],
  "tty-foreground": ["mntfix", "fggone", []],
  "path-hidden": ["mntct.sh", "hidden", []],
  "tmpfs-xattr": ["mntct.sh", "xattr", []],
  "ipcns-mqueue": ["mntfix", "mqloose", []],
};

describe("the refusal list and the fd-kind registry", () => {
  test("every fd_types value has a kind or a refusal, never both", () => {
    // the generated enum (a TypeScript enum maps numbers back to names too: numbers only)
    const values = Object.entries(FD_TYPE).filter(([, type]) => typeof type === "number") as [string, number][];
    expect(values.length).toBeGreaterThanOrEqual(21);
    for (const [name, type] of values) {
      const kind = FD_KINDS.some((k) => k.type === type);
      const refused = type in FD_TYPES_REFUSED;
      const notFile = type in FD_TYPES_NOT_FILES;
      expect(`${name}: ${kind ? "kind" : ""}${refused ? "refused" : ""}${notFile ? "not a file" : ""}`).toMatch(
        /: (kind|refused|not a file)$/
      );
    }
    for (const k of [...Object.values(FD_TYPES_REFUSED), ...Object.values(ANON_REFUSED)]) expect(keys).toContain(k);
  });
});

describe("dump refuses what it cannot restore exactly; the target runs on", () => {
  for (const key of keys) {
    test(`${key}: ${UNSUPPORTED[key]}`, async () => {
      // a hugetlb mapping needs huge pages: two reserved for the test, the setting put back after
      const hp = "/proc/sys/vm/nr_hugepages";
      const hpWas = key === "hugetlb" ? readFileSync(hp, "utf8").trim() : undefined;
      if (hpWas === "0") writeFileSync(hp, "2");
      try {
        await refusedAndRunsOn(key);
      } finally {
        if (hpWas === "0") writeFileSync(hp, "0");
      }
    });
  }
  async function refusedAndRunsOn(key: UnsupportedKey) {
    {
      const [wl, mode, extra] = OTHER[key] ?? ["refuse", key, []];
      const w = await startWorkload(wl, [mode], { stderr: "file" });
      const ext = join(w.dir, "ext-pid"); // a helper outside the tree, killed after the test
      if (existsSync(ext)) extPids.push(Number(readFileSync(ext, "utf8")));
      const culpritFile = join(w.dir, "culprit");
      const culprit = existsSync(culpritFile) ? Number(readFileSync(culpritFile, "utf8")) : w.pid;
      const r = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir(`refuse-${key}`), ...extra]);
      expect(r.code).toBe(1);
      // one error line (warnings about other fds, such as those --ext-unix-sk brings back
      // unconnected, may come before it)
      const lines = r.stderr
        .trim()
        .split("\n")
        .filter((l) => !l.startsWith("Warn: "));
      expect(lines.length).toBe(1);
      expect(lines[0]).toMatch(
        new RegExp(
          `^Error \\(\\w+\\): process ${culprit}( fd \\d+)?: .*${esc(UNSUPPORTED[key])}.* is not supported yet$`
        )
      );
      // (runs on: a leader that has exited is a zombie while its threads run)
      expect(isAlive(w.pid) || (key === "leader-exited" && threadsRun(w.pid))).toBe(true);
      expect(readFileSync(`/proc/${w.pid}/status`, "utf8")).toMatch(/TracerPid:\s*0\n/);
      trigger(w);
      const res = await waitResult(w, 10_000);
      expect(res.text).toStartWith("PASS");
    }
  }

  // cases that share an entry with the one above: refused the same way
  // (console and vt need the devices openable here: /dev/console and /dev/tty1)
  const openable = (dev: string) => {
    try {
      closeSync(openSync(dev, constants.O_RDONLY | constants.O_NOCTTY));
      return true;
    } catch {
      return false;
    }
  };
  // (issue 12's variants of an entry: each must be refused by it too, not slip through)
  const ALSO: [string, UnsupportedKey, string[]?][] = [
    ["pidfd-outside", "pidfd"],
    ["pidfd-thread", "pidfd"],
    ["deleted-symlink", "deleted-special"],
    ["deleted-fifo", "deleted-special"],
    ["unix-closed-named", "unix-queue-named-sender"],
    ["console", "terminal"],
    ["vt", "terminal"],
    ["devtty", "terminal"],
    ["scm-rights-stream", "scm-rights"],
    ["scm-rights-seqpacket", "scm-rights"],
    ["tmpfile-rodir", "tmpfile"],
    ["epoll-closed", "epoll-stale"],
    ["aio-events", "aio"],
    ["lease-write", "lease"],
    ["memfd-map-private", "memfd-map"],
    ["packet-opts", "packet-socket"],
    ["sock-packet", "packet-socket"],
    ["special-map-uring", "special-map"],
    ["netlink-bound", "netlink-socket"],
    ["tty-queued-master", "tty-queued"],
    ["tty-exclusive", "tty-mode"],
    ["fown-outside", "fown"],
    ["pidfd-dead2", "pidfd"],
    ["fanotify-marks", "fanotify"],
    ["inotify-deleted", "inotify-deleted", ["--link-remap"]],
  ];
  for (const [mode, key, extra = []] of ALSO) {
    test.skipIf((mode === "console" && !openable("/dev/console")) || (mode === "vt" && !openable("/dev/tty1")))(
      `${mode}${extra.length ? ` (${extra.join(" ")})` : ""}: also ${UNSUPPORTED[key]}`,
      async () => {
        const w = await startWorkload("refuse", [mode], { stderr: "file" });
        const culpritFile = join(w.dir, "culprit");
        const culprit = existsSync(culpritFile) ? Number(readFileSync(culpritFile, "utf8")) : w.pid;
        const r = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir(`refuse-${mode}`), ...extra]);
        expect(r.code).toBe(1);
        expect(r.stderr.trim()).toMatch(
          new RegExp(
            `^Error \\(\\w+\\): process ${culprit}( fd \\d+)?: ${esc(UNSUPPORTED[key])}.* is not supported yet$`
          )
        );
        expect(isAlive(w.pid)).toBe(true);
        trigger(w);
        expect((await waitResult(w, 10_000)).text).toStartWith("PASS");
      }
    );
  }

  test("a process started by unshare -C (a cgroup namespace of its own): refused at dump in one line, runs on", async () => {
    const w = await startWorkload("counter", [], { wrap: ["unshare", "-C", "--"], stderr: "file" });
    expect(readlinkSync(`/proc/${w.pid}/ns/cgroup`)).not.toBe(readlinkSync("/proc/self/ns/cgroup"));
    const r = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir("refuse-unshare-C")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      new RegExp(
        `^Error \\(dump\\): process ${w.pid}: cgroup namespace of its own \\(cgroup:\\[\\d+\\]\\) is not supported yet\n$`
      )
    );
    expect(isAlive(w.pid)).toBe(true);
    expect(readFileSync(`/proc/${w.pid}/status`, "utf8")).toMatch(/TracerPid:\s*0\n/);
    trigger(w);
    expect((await waitResult(w, 10_000)).text).toStartWith("PASS");
  });

  test("the workload's checks fail when the thing is undone (fown, scm-rights, sigtrap, guard, lease, aio, epoll-stale, ipcns-objects, sysv-shared-outside and the variants above)", async () => {
    for (const key of [
      "fown",
      "scm-rights",
      "sigtrap",
      "guard",
      "lease",
      "aio",
      "epoll-stale",
      "ipcns-objects",
      "scm-rights-stream",
      "scm-rights-seqpacket",
      "tmpfile-rodir",
      "epoll-closed",
      "aio-events",
      "lease-write",
      "memfd-map-private",
      "packet-opts",
      "special-map",
      "special-map-uring",
      "sock-packet",
      "netlink-bound",
      "fanotify-marks",
      "tty-queued-master",
      "fown-outside",
      "pidfd-dead2",
      "session-outside-pidns",
      "session-leader-gone",
      "pgrp-leader-gone",
      "sysv-shared-outside",
    ]) {
      const bad = await runWorkload("refuse", [key, "--selftest-corrupt"]);
      expect(`${key}: ${bad.summary}`).toStartWith(`${key}: FAIL`);
    }
  });
});
