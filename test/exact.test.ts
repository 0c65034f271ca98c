// Exact restores of state criu-bun used to lose or change silently (where each behaviour of issue
// 12 stands, exact or refused: test/EXACT-OR-REFUSED.md): each workload (test/workloads/
// exact.c MODE) sets one piece of state up, is dumped, killed and restored, and checks at go that
// it is all still there; a damaged copy (--selftest-corrupt) must fail the same checks.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { buildWorkloads, cleanup, startWorkload, trigger, waitResult, runWorkload } from "./harness";
import { dump, restore, imagesDir, cleanupImages } from "./engine-helpers";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
afterAll(() => {
  cleanup();
  cleanupImages();
});

const modes: [string, string, string[]?][] = [
  ["pdeathsig", "PR_SET_PDEATHSIG of a process and of its child"],
  ["thp", "PR_SET_THP_DISABLE"],
  ["tstp", "a child stopped by SIGTSTP stays stopped by SIGTSTP (its parent's wait sees no SIGSTOP)"],
  ["ttin", "a child stopped by SIGTTIN, the same"],
  ["membarrier", "membarrier registrations: private expedited and global expedited"],
  ["membarrier-synccore", "membarrier registration of sync-core alone (private expedited stays EPERM)"],
  ["membarrier-rseq", "membarrier registrations: rseq and private expedited"],
  ["securebits", "securebits (SECBIT_NOROOT locked, NO_SETUID_FIXUP, KEEP_CAPS)"],
  ["tls", "TLS GDT entries (set by PTRACE_SET_THREAD_AREA): two data segments as set, the third still empty"],
  ["trapign", "SIGTRAP ignored (restore's int3 stops force SIGTRAPs, which would reset it)"],
  ["traphandler", "a SIGTRAP handler with SIGTRAP blocked: handler, flags, mask and blocked bit kept"],
  ["mlock", "mlock()ed and MAP_LOCKED memory is locked again, contents kept"],
  ["loginuid", "/proc/self/loginuid"],
  ["maywrite", "a read-only MAP_SHARED mapping of a file opened read-write can still be made writable"],
  ["pipesize", "capacity of empty pipes (F_SETPIPE_SZ), smaller and larger than the default"],
  ["peergone", "unix stream, seqpacket and dgram sockets whose peer closed: queued data, then EOF / ECONNREFUSED"],
  ["udpshut", "UDP sockets shut down for writing (EPIPE) and for reading (recv 0)"],
  ["fown", "F_SETOWN to itself, F_SETSIG, O_ASYNC on a pipe: a write raises the signal with si_fd"],
  [
    "fownother",
    "F_SETOWN to a child and F_SETOWN_EX to its process group, F_SETSIG, O_ASYNC: the child gets each signal",
  ],
  [
    "ghost",
    "deleted sparse file (3 MiB, 8 KiB of data, --ghost-limit 1M: judged by its blocks): holes, mode and mtime",
    ["--ghost-limit", "1M", "--ghost-fiemap"],
  ],
  [
    "ghost",
    "the same with --no-ghost-fiemap (the data extents are saved all the same)",
    ["--ghost-limit", "1M", "--no-ghost-fiemap"],
  ],
  ["zpgid", "a zombie whose process group differs from its parent's"],
  ["wipeonfork", "MADV_WIPEONFORK kept: a fork's child sees the range zeroed"],
  ["vmflags", "a mapping per VmFlags a dump reads (dc dd mg hg nh wf sr rr, lo, gd, mw): each kept, contents too"],
  ["memfdmode", "a memfd fchmod()ed and fchown()ed: mode, owner and data kept"],
  ["memfdexec", "an executable memfd held read-only: execveat after restore (no ETXTBSY)"],
  [
    "linkremap",
    "--link-remap: a deleted file with another hard link comes back as that inode (fd and shared mapping)",
    ["--link-remap"],
  ],
  ["deldircwd", "a removed directory as cwd"],
  ["deldirfd", "a removed directory as an O_DIRECTORY fd"],
  ["devnode", "a device node made with mknod, and /dev/zero"],
  ["fifodata", "a FIFO with unread data"],
  ["opathlink", "an O_PATH|O_NOFOLLOW fd on a symlink"],
  ["procpid", "fds on /proc/CHILD/status and /proc/CHILD of a process of the tree"],
  [
    "seccompthreads",
    "threads with different seccomp filters (one kills on syscalls criu-bun injects): each keeps its own",
  ],
  [
    "pidfd",
    "pidfds on itself, on a child (two, one inode) and on a grandchild: signals and waitid through them; a child's pipe pulled in with pidfd_getfd",
  ],
  ["ptyowner", "a pty slave chown()ed to another user keeps its owner"],
  ["ctty", "controlling pty of a child session: /dev/tty opens, TIOCGSID on the master, SIGHUP when the master closes"],
  ["cttyclosed", "the same with the child's fd of the slave closed (its controlling terminal all the same)"],
];

describe("restored exactly (the workload checks itself after restore)", () => {
  for (const [i, [mode, what, dumpArgs]] of modes.entries()) {
    test(`${mode}: ${what}`, async () => {
      const w = await startWorkload("exact", [mode], { stderr: "file" });
      const dir = imagesDir(`exact-${mode}-${i}`);
      dump(w.pid, dir, dumpArgs);
      const r = await restore(dir, w.pid);
      trigger(w);
      const res = await waitResult(w, 15_000);
      expect(res.text).toStartWith("PASS");
      expect(await r.proc.exited).toBe(0);
    }, 60_000);
  }
});

// criu-bun names every inotify watch by its file handle at dump: the irmap options change nothing
test("--force-irmap and --irmap-scan-path are accepted; the inotify watches come back", async () => {
  const w = await startWorkload("inotify", [], { stderr: "file" });
  const dir = imagesDir("exact-irmap");
  dump(w.pid, dir, ["--force-irmap", "--irmap-scan-path", "/tmp"]);
  const r = await restore(dir, w.pid);
  trigger(w);
  expect((await waitResult(w, 15_000)).text).toStartWith("PASS");
  expect(await r.proc.exited).toBe(0);
}, 60_000);

// Both ends of a unix pair in different processes used to be restored as two separate pairs (one
// per process), so a reader waited forever: one pair per tree now, the far end imported.
describe("unix pairs across processes (used to hang after restore)", () => {
  for (const [mode, what] of [
    ["seqpair", "a child blocked in read() on a SEQPACKET pair whose other end is its parent's"],
    ["ring", "4 processes in a ring of stream socketpairs with 1 MiB in flight on each link"],
    ["server", "a named listener with 3 accepted connections whose clients are children waiting for the answer"],
    [
      "seqpair-cow",
      "the seqpair child and its parent sharing 16 MiB of heap copy-on-write, half of it rewritten by the child",
    ],
    ["seqpair-strict", "the seqpair child in seccomp strict mode"],
    ["seqpair-filter", "the seqpair child under a seccomp filter inherited from its parent"],
    ["seqpair-tsync", "the seqpair parent's filter set with TSYNC over its two threads, inherited by the child"],
    ["writers", "the server's 3 clients writing continuously (2 MiB each), blocked in write() at dump"],
  ] as const) {
    test(`${mode}: ${what}`, async () => {
      const w = await startWorkload("unixtree", [mode], { stderr: "file" });
      const dir = imagesDir(`unixtree-${mode}`);
      dump(w.pid, dir);
      const r = await restore(dir, w.pid);
      trigger(w);
      const res = await waitResult(w, 20_000);
      expect(res.text).toStartWith("PASS");
      expect(await r.proc.exited).toBe(0);
    }, 60_000);
  }
  test("the unixtree checks fail when data is lost", async () => {
    for (const mode of [
      "seqpair",
      "ring",
      "server",
      "seqpair-cow",
      "seqpair-strict",
      "seqpair-filter",
      "seqpair-tsync",
      "writers",
    ]) {
      const bad = await runWorkload("unixtree", [mode, "--selftest-corrupt"], { resultTimeoutMs: 15_000 });
      expect(`${mode}: ${bad.summary}`).toStartWith(`${mode}: FAIL`);
    }
  }, 60_000);
});

describe("the checks fail on a damaged state", () => {
  test("each mode but loginuid reports FAIL when its state is undone", async () => {
    for (const [mode] of modes) {
      if (mode === "loginuid") continue;
      const bad = await runWorkload("exact", [mode, "--selftest-corrupt"]);
      expect(`${mode}: ${bad.summary}`).toStartWith(`${mode}: FAIL`);
    }
  }, 60_000);
});
