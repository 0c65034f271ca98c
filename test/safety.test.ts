// Hostile directories and failures half-way: what criu-bun writes is private (0600, stage dirs
// 0700), no write follows a symlink another user planted, restore as root refuses images others
// could have written, a failed dump (error, full disk, target killed meanwhile) leaves the
// directory as it was.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  buildWorkloads,
  cleanup,
  criuBun,
  criuBunCommand,
  holdsFor,
  isAlive,
  killWorkload,
  REPO_ROOT,
  procState,
  startWorkload,
  trigger,
  waitResult,
  waitUntil,
  type Workload,
} from "./harness";
import { cleanupImages, dump, imagesDir, restore, killAndWait, waitReaped } from "./engine-helpers";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
const mounts: string[] = [];
const extraDirs: string[] = [];
afterAll(() => {
  for (const m of mounts.splice(0)) Bun.spawnSync(["umount", "-l", m]);
  for (const d of extraDirs.splice(0)) rmSync(d, { recursive: true, force: true });
  cleanup();
  cleanupImages();
});

const NOBODY = 65534;
function errorLines(stderr: string) {
  return stderr.split("\n").filter((l) => l.startsWith("Error ("));
}
/** run a command as nobody (the other, unprivileged user) */
function asNobody(argv: string[]) {
  const r = Bun.spawnSync(["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", ...argv], {
    stderr: "pipe",
  });
  if (r.exitCode !== 0) throw new Error(`as nobody: ${argv.join(" ")}: ${r.stderr.toString()}`);
}
/** name -> contents of every entry (symlinks as "-> target") */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of readdirSync(dir).sort()) {
    const p = join(dir, n),
      st = lstatSync(p);
    out[n] = st.isSymbolicLink()
      ? `-> ${require("node:fs").readlinkSync(p)}`
      : st.isFile()
        ? Bun.hash(readFileSync(p)).toString(16)
        : "dir";
  }
  return out;
}
/** a root-only file that must never change */
function victim(tag: string) {
  const d = mkdtempSync(join(tmpdir(), `criu-bun-victim-${tag}-`));
  const f = join(d, "secret");
  writeFileSync(f, "do not touch\n", { mode: 0o644 });
  return {
    f,
    same: () => readFileSync(f, "utf8") === "do not touch\n" && statSync(f).size === 13,
    rm: () => rmSync(d, { recursive: true, force: true }),
  };
}
async function wakeAndCheck(w: Workload) {
  trigger(w);
  const r = await waitResult(w, 15000);
  expect(r.text).toStartWith("PASS");
}

describe("what criu-bun writes is private", () => {
  test("images 0600, log and pidfile 0600, no stage left behind", async () => {
    const w = await startWorkload("block", ["read"]);
    const dir = imagesDir("modes");
    dump(w.pid, dir);
    const names = readdirSync(dir);
    expect(names).toContain("inventory.img");
    expect(names.filter((n) => n.startsWith("."))).toEqual([]);
    for (const n of names) expect({ n, mode: statSync(join(dir, n)).mode & 0o777 }).toEqual({ n, mode: 0o600 });
    const r = await restore(dir, w.pid, ["--pidfile", "pid"]);
    expect(statSync(join(dir, "pid")).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(dir, "pid"), "utf8")).toBe(String(w.pid));
    expect(statSync(join(dir, "restore.log")).mode & 0o777).toBe(0o600);
    await wakeAndCheck(w);
    expect(await r.proc.exited).toBe(0);
  }, 30_000);
});

describe("the directory criu-bun creates", () => {
  test("a dump's stage (where images are written until the commit) is 0700, owned by criu-bun, its files 0600", async () => {
    const w = await startWorkload("block", ["read"]);
    const dir = imagesDir("stage-mode");
    chmodSync(dir, 0o755); // readable by all: what protects the images is the stage's own mode
    const pause = join(w.dir, "pause-stage");
    const p = Bun.spawn([...criuBunCommand(), "dump", "-t", String(w.pid), "-D", dir, "-R"], {
      stdout: "ignore",
      stderr: "pipe",
      env: { ...process.env, CRIU_BUN_PAUSE: "dump-written", CRIU_BUN_PAUSE_FILE: pause },
    });
    try {
      const end = Date.now() + 60_000;
      while (!existsSync(pause) && p.exitCode === null && Date.now() < end) await Bun.sleep(10);
      expect(existsSync(pause)).toBe(true);
      const stages = readdirSync(dir).filter((n) => n.startsWith(".criu-bun-dump-"));
      expect(stages.length).toBe(1);
      const st = lstatSync(join(dir, stages[0]));
      expect({ dir: st.isDirectory(), mode: st.mode & 0o7777, uid: st.uid }).toEqual({
        dir: true,
        mode: 0o700,
        uid: process.geteuid!(),
      });
      const inside = readdirSync(join(dir, stages[0]));
      expect(inside).toContain(`core-${w.pid}.img`);
      for (const n of inside)
        expect({ n, mode: statSync(join(dir, stages[0], n)).mode & 0o777 }).toEqual({ n, mode: 0o600 });
    } finally {
      rmSync(pause, { force: true });
    }
    expect(await p.exited).toBe(0);
    expect(readdirSync(dir).filter((n) => n.startsWith("."))).toEqual([]);
    await wakeAndCheck(w);
  }, 90_000);
});

describe("symlinks planted by another user", () => {
  test("in the images directory: no write follows them (images, log, pidfile)", async () => {
    const v = victim("img");
    try {
      const w = await startWorkload("block", ["read"]);
      const dir = imagesDir("planted");
      chmodSync(dir, 0o1777); // a shared directory, as /tmp
      const names = [
        "inventory.img",
        "pages-1.img",
        "pages-1.idx",
        `core-${w.pid}.img`,
        `pagemap-${w.pid}.img`,
        `mm-${w.pid}.img`,
        "files.img",
        "pstree.img",
        "stats-dump.img",
        "stats-restore.img",
        "dump.log",
        "restore.log",
        "pid",
        `.criu-bun-probe-${w.pid}`,
      ];
      for (const n of names) asNobody(["ln", "-s", v.f, join(dir, n)]);
      // a log through a symlink is refused before anything is frozen
      const withLog = criuBun(["dump", "-t", String(w.pid), "-D", dir, "-o", "dump.log"]);
      expect(withLog.code).not.toBe(0);
      expect(errorLines(withLog.stderr)).toEqual([
        `Error (dump): cannot open log file: ${join(dir, "dump.log")}: a symbolic link, not followed`,
      ]);
      expect(isAlive(w.pid)).toBe(true);
      // images replace the links (rename never follows one): the victim stays as it was
      const d = criuBun(["dump", "-t", String(w.pid), "-D", dir]);
      expect(d.stderr).toBe("");
      expect(d.code).toBe(0);
      expect(v.same()).toBe(true);
      for (const n of ["inventory.img", "pages-1.img", `core-${w.pid}.img`])
        expect(lstatSync(join(dir, n)).isFile()).toBe(true);
      // as root, a directory others can write is refused; told to trust it, restore writes its
      // pidfile and stats without following the links
      await waitReaped(w.pid);
      const refused = criuBun(["restore", "-d", "-D", dir]);
      expect(refused.code).not.toBe(0);
      expect(errorLines(refused.stderr)).toEqual([
        `Error (restore): images directory '${dir}' is writable by others: as root, criu-bun restores only images no other user could have changed (--trust-images to restore it anyway)`,
      ]);
      const logRefused = criuBun(["restore", "-d", "-D", dir, "--trust-images", "-o", "restore.log"]);
      expect(errorLines(logRefused.stderr)).toEqual([
        `Error (restore): cannot open log file: ${join(dir, "restore.log")}: a symbolic link, not followed`,
      ]);
      const p = Bun.spawn([...criuBunCommand(), "restore", "-D", dir, "--trust-images", "--pidfile", "pid"], {
        stdout: "ignore",
        stderr: "pipe",
      });
      const deadline = Date.now() + 20000;
      while (!lstatSync(join(dir, "pid")).isFile() && Date.now() < deadline && p.exitCode === null) await Bun.sleep(10);
      expect(lstatSync(join(dir, "pid")).isFile()).toBe(true);
      expect(readFileSync(join(dir, "pid"), "utf8")).toBe(String(w.pid));
      expect(v.same()).toBe(true);
      await wakeAndCheck(w);
      expect(await p.exited).toBe(0);
      expect(v.same()).toBe(true);
    } finally {
      v.rm();
    }
  }, 40_000);

  test("in the work directory (-W): log refused, pidfile replaced, victim untouched", async () => {
    const v = victim("work");
    try {
      const w = await startWorkload("block", ["read"]);
      const dir = imagesDir("w-img");
      const work = imagesDir("w-work");
      chmodSync(work, 0o1777);
      for (const n of ["dump.log", "restore.log", "pid"]) asNobody(["ln", "-s", v.f, join(work, n)]);
      const d = criuBun(["dump", "-t", String(w.pid), "-D", dir, "-W", work, "-o", "dump.log"]);
      expect(d.code).not.toBe(0);
      expect(errorLines(d.stderr)[0]).toContain("a symbolic link");
      dump(w.pid, dir);
      await waitReaped(w.pid);
      const p = Bun.spawn([...criuBunCommand(), "restore", "-D", dir, "-W", work, "--pidfile", "pid"], {
        stdout: "ignore",
        stderr: "pipe",
      });
      const deadline = Date.now() + 20000;
      while (!lstatSync(join(work, "pid")).isFile() && Date.now() < deadline) await Bun.sleep(10);
      expect(lstatSync(join(work, "pid")).isFile()).toBe(true);
      expect(statSync(join(work, "pid")).mode & 0o777).toBe(0o600);
      expect(readFileSync(join(work, "pid"), "utf8")).toBe(String(w.pid));
      expect(v.same()).toBe(true);
      await wakeAndCheck(w);
      expect(await p.exited).toBe(0);
    } finally {
      v.rm();
    }
  }, 40_000);
});

describe("restore as root trusts only images no other user could have written", () => {
  test("directory writable by others, file of another user, group-writable file: refused; --trust-images restores", async () => {
    const w = await startWorkload("block", ["read"]);
    const dir = imagesDir("trust");
    dump(w.pid, dir);
    await killAndWait(w);
    await waitReaped(w.pid);
    const tryRestore = () => errorLines(criuBun(["restore", "-d", "-D", dir]).stderr);
    chmodSync(dir, 0o777);
    expect(tryRestore()[0]).toContain("is writable by others");
    chmodSync(dir, 0o700);
    chownSync(join(dir, "pages-1.img"), NOBODY, NOBODY);
    expect(tryRestore()).toEqual([
      `Error (restore): ${join(dir, "pages-1.img")} is owned by uid ${NOBODY}: as root, criu-bun restores only images no other user could have changed (--trust-images to restore it anyway)`,
    ]);
    chownSync(join(dir, "pages-1.img"), 0, 0);
    chmodSync(join(dir, "mm-" + w.pid + ".img"), 0o620);
    expect(tryRestore()[0]).toContain(`mm-${w.pid}.img is writable by its group`);
    chownSync(dir, NOBODY, NOBODY);
    expect(tryRestore()[0]).toContain(`is owned by uid ${NOBODY}`);
    expect(isAlive(w.pid)).toBe(false);
    const r = await restore(dir, w.pid, ["--trust-images"]);
    await wakeAndCheck(w);
    expect(await r.proc.exited).toBe(0);
  }, 30_000);
});

describe("without privileges", () => {
  test("restore as an ordinary user: one line naming the missing capability and what for", async () => {
    const w = await startWorkload("block", ["read"]);
    const dir = imagesDir("nonroot");
    dump(w.pid, dir);
    await waitReaped(w.pid);
    chmodSync(dir, 0o755);
    for (const n of readdirSync(dir)) chmodSync(join(dir, n), 0o644);
    const r = Bun.spawnSync(
      [
        "setpriv",
        `--reuid=${NOBODY}`,
        `--regid=${NOBODY}`,
        "--clear-groups",
        "--inh-caps=-all",
        ...criuBunCommand(),
        "restore",
        "-D",
        dir,
      ],
      { stderr: "pipe", stdout: "pipe", env: { ...process.env, HOME: "/nonexistent" } }
    );
    expect(r.exitCode).not.toBe(0);
    expect(errorLines(r.stderr.toString())).toEqual([
      "Error (restore): giving processes their old PIDs (clone3 set_tid) and their memory layout (PR_SET_MM) needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN, which this user does not have; run the restore as root",
    ]);
    expect(existsSync(`/proc/${w.pid}`)).toBe(false);
  }, 30_000);
});

describe("a failed dump leaves the directory as it was", () => {
  test("error and full disk over an older dump: the older one is intact and restorable, no partial file", async () => {
    const old = await startWorkload("block", ["read"]);
    const dir = imagesDir("enospc");
    Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", dir]);
    mounts.push(dir);
    const used = () => Number(/\n\S+\s+\d+\s+(\d+)/.exec(Bun.spawnSync(["df", "-k", dir]).stdout.toString())![1]);
    dump(old.pid, dir);
    const before = snapshot(dir),
      usedBefore = used();
    // a failure at the very end (everything written)
    const w = await startWorkload("counter");
    const f = criuBun(["dump", "-t", String(w.pid), "-D", dir, "--leave-running"], {
      env: { CRIU_BUN_FAULT: "dump-end" },
    });
    expect(f.code).not.toBe(0);
    expect(snapshot(dir)).toEqual(before);
    // the disk fills up (counter has megabytes of heap): one line, nothing left, target running
    const full = criuBun(["dump", "-t", String(w.pid), "-D", dir]);
    expect(full.code).not.toBe(0);
    const errs = errorLines(full.stderr);
    expect(errs.length).toBe(1);
    expect(errs[0]).toContain("ENOSPC");
    expect(snapshot(dir)).toEqual(before);
    expect(used()).toBe(usedBefore);
    await wakeAndCheck(w);
    // the older dump still restores
    await waitReaped(old.pid);
    const r = await restore(dir, old.pid);
    await wakeAndCheck(old);
    expect(await r.proc.exited).toBe(0);
  }, 60_000);

  test("a later dump into the same directory replaces the older one whole (stale images go)", async () => {
    const a = await startWorkload("threads", ["2"]);
    const dir = imagesDir("replace");
    dump(a.pid, dir, ["--leave-running"]);
    expect(existsSync(join(dir, `core-${a.pid}.img`))).toBe(true);
    const b = await startWorkload("block", ["read"]);
    dump(b.pid, dir);
    expect(existsSync(join(dir, `core-${a.pid}.img`))).toBe(false);
    expect(readdirSync(dir).filter((n) => n.startsWith("core-"))).toEqual([`core-${b.pid}.img`]);
    const r = await restore(dir, b.pid);
    await wakeAndCheck(b);
    expect(await r.proc.exited).toBe(0);
    await wakeAndCheck(a);
  }, 30_000);
});

describe("a dump's commit syncs what it wrote, and only that", () => {
  /** a new directory on a file system that keeps its files on a disk (not tmpfs or ramfs), or undefined */
  function diskDir(tag: string): string | undefined {
    for (const base of [tmpdir(), "/var/tmp", REPO_ROOT]) {
      const t = Bun.spawnSync(["stat", "-f", "-c", "%T", base]).stdout.toString().trim();
      if (t && t !== "tmpfs" && t !== "ramfs") {
        const d = mkdtempSync(join(base, `criu-bun-img-${tag}-`));
        extraDirs.push(d);
        return d;
      }
    }
    return undefined;
  }
  const EVENTS = ["syncfs", "fdatasync", "fsync"];
  /** `dump -R` of pid into dir under perf stat: the calls of each kind, the log, the images */
  function countedDump(pid: number, dir: string) {
    const r = Bun.spawnSync(
      [
        "perf",
        "stat",
        "-x,",
        "-e",
        EVENTS.map((e) => `syscalls:sys_enter_${e}`).join(","),
        "--",
        ...criuBunCommand(),
        "dump",
        "-R",
        "-t",
        String(pid),
        "-D",
        dir,
        "-o",
        "dump.log",
        "-v4",
      ],
      { stdout: "pipe", stderr: "pipe" }
    );
    const err = r.stderr.toString();
    const calls: Record<string, number> = {};
    for (const e of EVENTS)
      calls[e] = Number(new RegExp(`^(\\d+),[^\\n]*syscalls:sys_enter_${e},`, "m").exec(err)?.[1]);
    const log = existsSync(join(dir, "dump.log")) ? readFileSync(join(dir, "dump.log"), "utf8") : "";
    if (r.exitCode !== 0) console.log(err, log.slice(-2000));
    expect(r.exitCode).toBe(0);
    const images = readdirSync(dir).filter((n) => /\.(img|idx|lz4|sum)$/.test(n)).length;
    return { calls, log, images };
  }
  const meminfoKb = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(readFileSync("/proc/meminfo", "utf8"))?.[1]);

  test("on a disk: each image by itself (fdatasync) while another program's 160 MiB wait for writeback, which stay unwritten; one syncfs when little waits; the images directory synced at each step; on tmpfs nothing", async () => {
    const probe = Bun.spawnSync(["perf", "stat", "-x,", "-e", "syscalls:sys_enter_fsync", "true"], { stderr: "pipe" });
    if (probe.exitCode !== 0) {
      console.log("skipped: perf stat cannot count system calls here");
      return;
    }
    const disk = diskDir("sync");
    if (!disk) {
      console.log("skipped: no directory on a disk file system");
      return;
    }
    const freeKb = Number(Bun.spawnSync(["df", "-k", "--output=avail", disk]).stdout.toString().split("\n")[1]);
    if (!(freeKb > 1 << 20)) {
      console.log(`skipped: ${freeKb} KiB free on the disk file system, 1 GiB wanted`);
      return;
    }
    const w = await startWorkload("counter");
    try {
      // another program's data, written and not synced, on the same file system
      const junk = join(disk, "junk");
      Bun.spawnSync(["dd", "if=/dev/zero", `of=${junk}`, "bs=1M", "count=160", "status=none"]);
      const waiting = meminfoKb("Dirty") + meminfoKb("Writeback");
      expect(waiting).toBeGreaterThan(100 * 1024);
      const busy = join(disk, "busy");
      mkdirSync(busy);
      const b = countedDump(w.pid, busy);
      expect(b.log).toContain(`images synced one by one (${b.images})`);
      expect(b.calls).toEqual({ syncfs: 0, fdatasync: b.images, fsync: 3 });
      // the junk still waits (a syncfs would have written it back: Dirty down to almost nothing)
      expect(meminfoKb("Dirty") + meminfoKb("Writeback")).toBeGreaterThan(100 * 1024);
      rmSync(junk);
      // little waiting: one syncfs (another writer on this machine may have left more: then one by one)
      Bun.spawnSync(["sync"]);
      const quiet = join(disk, "quiet");
      mkdirSync(quiet);
      const q = countedDump(w.pid, quiet);
      if (q.log.includes("images synced by syncfs")) expect(q.calls).toEqual({ syncfs: 1, fdatasync: 0, fsync: 3 });
      else {
        console.log("more than 4 MiB of others' data waited for writeback: images synced one by one");
        expect(q.calls).toEqual({ syncfs: 0, fdatasync: q.images, fsync: 3 });
      }
      // tmpfs: no sync at all (its fsync does nothing)
      const mem = imagesDir("sync-tmpfs");
      Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", mem]);
      mounts.push(mem);
      const m = countedDump(w.pid, mem);
      expect(m.calls).toEqual({ syncfs: 0, fdatasync: 0, fsync: 0 });
      expect(m.log).not.toContain("images synced");
      // every dump committed, and the counter, dumped three times and left running, checks itself
      for (const d of [busy, quiet, mem]) expect(existsSync(join(d, "inventory.img"))).toBe(true);
      await wakeAndCheck(w);
    } finally {
      killWorkload(w);
    }
  }, 60_000);
});

/** descendants of pid (children files of every thread), deepest last */
function descendants(pid: number): number[] {
  const out: number[] = [];
  const walk = (p: number) => {
    let kids: number[] = [];
    try {
      for (const t of readdirSync(`/proc/${p}/task`))
        kids.push(
          ...readFileSync(`/proc/${p}/task/${t}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number)
        );
    } catch {}
    for (const k of kids) {
      out.push(k);
      walk(k);
    }
  };
  walk(pid);
  return out;
}

describe("a process of the tree lost during its dump", () => {
  for (const [point, who] of [
    ["dump-frozen", "root"],
    ["dump-written", "root"],
    ["dump-written", "child"],
  ] as const) {
    test(`${who} killed at ${point}: the dump fails, nothing committed`, async () => {
      const w = await startWorkload(who === "root" ? "block" : "tree", who === "root" ? ["read"] : []);
      const kids = who === "child" ? descendants(w.pid) : [];
      try {
        const dir = imagesDir("lost");
        const pauseFile = join(imagesDir("pause"), "at");
        const p = Bun.spawn([...criuBunCommand(), "dump", "-t", String(w.pid), "-D", dir], {
          stdout: "ignore",
          stderr: "pipe",
          env: { ...process.env, CRIU_BUN_PAUSE: point, CRIU_BUN_PAUSE_FILE: pauseFile },
        });
        const deadline = Date.now() + 20000;
        while (!existsSync(pauseFile)) {
          if (Date.now() > deadline || p.exitCode !== null)
            throw new Error(`dump did not reach ${point}: ${await new Response(p.stderr).text()}`);
          await Bun.sleep(5);
        }
        const victimPid = who === "root" ? w.pid : kids.filter(isAlive).pop()!;
        process.kill(victimPid, "SIGKILL");
        rmSync(pauseFile);
        expect(await p.exited).not.toBe(0);
        const errs = errorLines(await new Response(p.stderr).text());
        expect(errs).toEqual([`Error (dump): process ${victimPid} of the tree exited while it was being dumped`]);
        expect(existsSync(join(dir, "inventory.img"))).toBe(false);
        expect(readdirSync(dir)).toEqual([]);
        if (who === "child") {
          // the rest of the tree was let go and runs on
          for (const k of kids)
            if (k !== victimPid && isAlive(k))
              if (existsSync(`/proc/${k}`))
                expect(readFileSync(`/proc/${k}/status`, "utf8")).toMatch(/TracerPid:\s*0\n/);
        }
      } finally {
        for (const k of kids)
          try {
            process.kill(k, "SIGKILL");
          } catch {}
      }
    }, 30_000);
  }
});

describe("criu-bun killed at random moments", () => {
  const { listLockTables } = require("../src/net/netlock") as typeof import("../src/net/netlock");
  /** processes whose command line is the puppet's */
  const puppets = () =>
    readdirSync("/proc")
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => {
        try {
          return readFileSync(`/proc/${p}/cmdline`, "latin1").startsWith("criu-bun-puppet\0");
        } catch {
          return false;
        }
      });
  const tracer = (pid: number) => {
    try {
      return Number(/TracerPid:\s*(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? -1);
    } catch {
      return -1;
    }
  };
  const until = (fn: () => boolean, what: string, ms = 10000) => waitUntil(what, fn, ms);
  /**
   * What a killed restore left of pid: "gone", "running" (released: untraced, with its memory, no
   * SIGKILL pending) or undefined while that is not settled. The kernel sends SIGKILL to a dead
   * tracer's tracees (PTRACE_O_EXITKILL) before it detaches them: for a moment one that was never
   * released is untraced and alive, with the SIGKILL pending or already exiting (its memory gone).
   */
  const afterKill = (pid: number): "gone" | "running" | undefined => {
    let st: string;
    try {
      st = readFileSync(`/proc/${pid}/status`, "utf8");
    } catch {
      return "gone";
    }
    if (/^State:\s*[ZX]/m.test(st)) return "gone";
    const sig = (k: string) => BigInt(`0x${new RegExp(`^${k}:\\s*([0-9a-f]+)`, "m").exec(st)?.[1] ?? "0"}`);
    const killPending = ((sig("SigPnd") | sig("ShdPnd")) & 0x100n) !== 0n;
    if (/^TracerPid:\s*0$/m.test(st) && !killPending && /^VmSize:/m.test(st)) return "running";
    return undefined;
  };
  // a killed criu-bun's lock table goes when the kernel closes its netlink socket, with the last of
  // its threads: the tracing thread may be gone (the target untraced) a moment before that
  const lockGone = () =>
    until(
      () => listLockTables().length === 0,
      `lock tables left by a killed criu-bun: ${listLockTables().join(", ")}`,
      5000
    );
  /** run criu-bun with args and SIGKILL it after delayMs (or let it finish); returns its exit */
  async function killedAfter(args: string[], delayMs: number) {
    const p = Bun.spawn([...criuBunCommand(), ...args], { stdout: "ignore", stderr: "ignore" });
    await Promise.race([p.exited, Bun.sleep(delayMs)]);
    try {
      p.kill("SIGKILL");
    } catch {}
    return { code: await p.exited, pid: p.pid };
  }
  /** the round trips a test's client counted in the file trips (0 before the first) */
  const tripCounter = (trips: string) => () => {
    try {
      return Number(readFileSync(trips, "utf8"));
    } catch {
      return 0;
    }
  };
  /** a python3 client of w's server on port: a round trip of 100 bytes every 50 ms for as long as it
   *  runs, counted in w.dir/trips (the connection is usable while the count grows) */
  function roundTrips(w: Workload, port: number) {
    const trips = join(w.dir, "trips");
    const client = Bun.spawn(
      [
        "python3",
        "-c",
        `import socket,time,os\ns=socket.create_connection(("127.0.0.1",${port}))\nn=0\nwhile True:\n  s.sendall(b"x"*100)\n  got=0\n  while got<100:\n    got+=len(s.recv(100-got))\n  n+=1\n  open("${trips}.tmp","w").write(str(n)); os.rename("${trips}.tmp","${trips}")\n  time.sleep(0.05)`,
      ],
      { stdout: "ignore", stderr: "ignore" }
    );
    return { client, tripCount: tripCounter(trips) };
  }
  /** a python3 client of w's server on port with n connections: one round trip of 100 bytes on
   *  each, counted in w.dir/trips (1 once all are done), then it waits, reading: nothing stays
   *  queued on the server's side (a socket closed with unread data resets at once and lingers on no
   *  account; one closed the normal way without lingers) */
  function quietClient(w: Workload, port: number, n = 1) {
    const trips = join(w.dir, "trips");
    const client = Bun.spawn(
      [
        "python3",
        "-c",
        `import socket,time,os\nss=[socket.create_connection(("127.0.0.1",${port})) for i in range(${n})]\nfor s in ss:\n  s.sendall(b"x"*100)\n  got=0\n  while got<100:\n    got+=len(s.recv(100-got))\nopen("${trips}.tmp","w").write("1"); os.rename("${trips}.tmp","${trips}")\nss[0].recv(1)\ntime.sleep(600)`,
      ],
      { stdout: "ignore", stderr: "ignore" }
    );
    return { client, tripCount: tripCounter(trips) };
  }
  /** what ss shows on port, in any state: the server's side (its listener and its end of the
   *  connection: sport) or the client's (dport) */
  const onPort = (port: number, side: "sport" | "dport") =>
    Bun.spawnSync(["ss", "-tanH", `( ${side} = :${port} )`])
      .stdout.toString()
      .trim();
  /** the restored tree killed with its criu-bun (or by its failed restore): gone, no puppet left */
  async function treeGone(w: Workload, how: string) {
    await until(() => !existsSync(`/proc/${w.pid}`), `${w.pid} gone (${how})`);
    await until(() => puppets().length === 0, "a puppet survives");
  }
  /** another restore of dir brings w's connection on port back: no lock left, the connection
   *  established (and `flowing`, when given, sees it used), the server's own check passes (its
   *  connection's options as before, no socket error ever) */
  async function restoresAgain(w: Workload, dir: string, port: number, flowing?: () => Promise<void>) {
    const again = criuBun(["restore", "-D", dir, "-d"]);
    expect({ code: again.code, err: again.stderr }).toEqual({ code: 0, err: "" });
    expect(listLockTables()).toEqual([]);
    await until(
      () => /^ESTAB/m.test(onPort(port, "sport")),
      `the restored connection established: ${onPort(port, "sport")}`
    );
    await flowing?.();
    trigger(w);
    expect((await waitResult(w, 30_000)).summary).toBe("PASS");
  }
  // a seeded generator: the same delays every run
  let seed = 0x5eed;
  const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;

  test("dump killed while a live connection is in TCP repair mode: the program's sockets work as before", async () => {
    // TCP_REPAIR belongs to the socket, not to criu-bun's duplicate of it: a criu-bun killed while
    // the queues are read would leave it on in a program that runs on (reads fail with EPERM,
    // writes queue without being sent), and repair mode resets SO_REUSEADDR. The sentinel that
    // holds the socket (src/sys/sentinel.ts) puts both back when criu-bun's fds close. The
    // program sleeps until go, so it uses its sockets only after that.
    // three threads and a child process that shares the sockets: each thread of both is parked for
    // the window (Injector.park) and must be woken, by criu-bun (a whole dump first: every thread
    // woken before any is given its registers back, the guard's stub in the vDSO being shared) or
    // by the sentinel
    const w = await startWorkload("tcppair.py", ["--threads=2", "--fork"]);
    const whole = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir("whole-repair"), "--tcp-established", "-R"]);
    expect({ code: whole.code, err: whole.stderr }).toEqual({ code: 0, err: "" });
    // killed with the socket in repair mode (its queues being read); between leaving repair mode
    // and putting SO_REUSEADDR back, in that window; and between the two again at the dump's end,
    // where the lock is gone and the socket leaves repair mode once more with a window probe
    for (const die of ["tcp-repair", "tcp-repair-off", "tcp-window-probe"]) {
      const dir = imagesDir(`kill-${die}`);
      const r = Bun.spawnSync(
        [...criuBunCommand(), "dump", "-t", String(w.pid), "-D", dir, "--tcp-established", "-R"],
        { stdout: "ignore", stderr: "ignore", env: { ...process.env, CRIU_BUN_DIE: die } }
      );
      expect({ die, signal: r.signalCode }).toEqual({ die, signal: "SIGKILL" });
      await until(() => tracer(w.pid) === 0, `${die}: ${w.pid} still traced`);
      // (the tables of this target only: the other tests of this file run apart). The lock goes
      // with the last holder of criu-bun's netlink socket: a sentinel armed just before the kill
      // holds a copy of criu-bun's fds until it has run its first steps (under load, after the
      // target is untraced), so the table may outlive criu-bun by a few milliseconds
      const mine = () => listLockTables().filter((t) => t.includes(`-${w.pid}`));
      await until(() => mine().length === 0, `${die}: lock tables left: ${mine().join(", ")}`, 5000);
      // the sentinel (its command line is the dead criu-bun's: it shares its memory) exits once its work is done
      const sentinels = () =>
        readdirSync("/proc").filter((p) => {
          try {
            return (
              /^\d+$/.test(p) &&
              procState(Number(p)) !== "Z" &&
              readFileSync(`/proc/${p}/cmdline`, "latin1").includes(dir)
            );
          } catch {
            return false;
          }
        });
      await until(() => sentinels().length === 0, `${die}: the sentinel to finish`);
    }
    // no sentinel to be had for the end's window probe: the dump goes on without the probe, and
    // the socket keeps what it has (out of repair mode, SO_REUSEADDR as the program set it)
    const noProbe = Bun.spawnSync(
      [...criuBunCommand(), "dump", "-t", String(w.pid), "-D", imagesDir("no-probe"), "--tcp-established", "-R"],
      { stdout: "ignore", stderr: "pipe", env: { ...process.env, CRIU_BUN_FAULT: "tcp-window-probe" } }
    );
    expect({ code: noProbe.exitCode, err: noProbe.stderr.toString() }).toEqual({
      code: 0,
      err: expect.stringContaining("no window probe (injected fault 'tcp-window-probe' (CRIU_BUN_FAULT))"),
    });
    trigger(w);
    expect((await waitResult(w, 30_000)).summary).toBe("PASS");
  }, 60_000);

  test("restore killed when all but leaving repair mode is done: the connection closes silently, nothing lingers on the port, the dump's lock stays and another restore brings it back", async () => {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const w = await startWorkload("tcpserver", [String(port), "--expect=1"]);
    const { client, tripCount } = quietClient(w, port);
    const serverSide = () => onPort(port, "sport");
    try {
      await until(() => tripCount() >= 1, "a round trip before the dump", 30000);
      const dir = imagesDir("kill-repair-off");
      dump(w.pid, dir, ["--tcp-established"]);
      await waitReaped(w.pid);
      expect(serverSide()).toBe(""); // the dumped server's sockets went silently
      // everything done but the connections' repair mode, the dump's lock's handover and the
      // release: registers, hooks. Killed there, the restored server dies (PTRACE_O_EXITKILL) with
      // its connection still in repair mode
      const pause = join(w.dir, "pause-repair");
      const p = Bun.spawn([...criuBunCommand(), "restore", "-D", dir, "-d", "-v4", "-o", "restore.log"], {
        stdout: "ignore",
        stderr: "pipe",
        env: { ...process.env, CRIU_BUN_PAUSE: "restore-repair-off", CRIU_BUN_PAUSE_FILE: pause },
      });
      await until(() => existsSync(pause) || p.exitCode !== null, "the restore to reach restore-repair-off", 60000);
      if (p.exitCode !== null) expect(await new Response(p.stderr).text()).toBe("(paused at restore-repair-off)");
      expect(isAlive(w.pid)).toBe(true); // restored, still held
      expect(readFileSync(join(dir, "restore.log"), "utf8")).toContain("in repair mode until the tree is let go");
      p.kill("SIGKILL");
      await p.exited;
      rmSync(pause, { force: true });
      await treeGone(w, "killed with its criu-bun");
      // closed in repair mode: no FIN, so no FIN_WAIT or TIME_WAIT socket keeps the port (one
      // closed the normal way stays for a minute, and a later listener's bind fails)
      await holdsFor("nothing of the server's on its port", () => serverSide() === "", 1000);
      // the dump's lock stays (it goes only once the connections are out of repair mode): the
      // client saw nothing, its retransmissions are dropped, and another restore brings it back
      expect(listLockTables()).toEqual([`CRIU-criu-bun-${w.pid}`]);
      await restoresAgain(w, dir, port);
    } finally {
      client.kill("SIGKILL");
    }
  }, 180_000);

  // The dump's lock is lifted only once the processes are let go (a sentinel lifts it if criu-bun
  // dies after that: the restore-released kill above). Killed before, the processes die behind the
  // dump's lock: the peer sees nothing, its connection stays. (Lifted before the release, as until
  // the nineteenth session, a kill in between reset the peer's connection.) Their connections, out
  // of repair mode by then, are put back into it by a sentinel as criu-bun dies, so they close
  // silently: closed the normal way they lingered (FIN_WAIT, their FIN dropped by the lock) holding
  // the 4-tuple, and another restore failed with EADDRNOTAVAIL until the kernel dropped them.
  test("restore killed with everything done but the release: the dump's lock stays (held by a stopped sentinel, gone with criu-bun), the peer's connection is not reset, nothing lingers and another restore brings it back", async () => {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const w = await startWorkload("tcpserver", [String(port), "--expect=1"]);
    const { client, tripCount } = roundTrips(w, port);
    /** the client's end of the connection (its local port is the server's peer port), in any state */
    const clientSide = () => onPort(port, "dport");
    const table = `CRIU-criu-bun-${w.pid}`;
    try {
      await until(() => tripCount() >= 3, "round trips before the dump", 30000);
      const dir = imagesDir("kill-lift-held");
      dump(w.pid, dir, ["--tcp-established"]);
      await waitReaped(w.pid);
      const r = Bun.spawnSync([...criuBunCommand(), "restore", "-D", dir, "-d"], {
        stdout: "ignore",
        stderr: "ignore",
        env: { ...process.env, CRIU_BUN_DIE: "restore-lift-held" },
      });
      expect(r.signalCode).toBe("SIGKILL");
      await treeGone(w, "killed with its criu-bun");
      // the sentinel died with criu-bun (PTRACE_O_EXITKILL): the dump's lock stays, and the client,
      // retransmitting into it, is not reset (it would be gone from ss, or in CLOSE_WAIT)
      await holdsFor(
        `the dump's lock kept and the client's connection established (${clientSide()})`,
        () => listLockTables().includes(table) && /^ESTAB/.test(clientSide()),
        1500
      );
      // the server's sockets went silently: nothing holds the connection's addresses
      await until(() => onPort(port, "sport") === "", `the server's sockets gone: ${onPort(port, "sport")}`);
      await restoresAgain(w, dir, port, async () => {
        const n = tripCount();
        await until(() => tripCount() >= n + 3, `round trips after the second restore stopped at ${n}`, 30000);
      });
    } finally {
      client.kill("SIGKILL");
      Bun.spawnSync(["nft", "delete", "table", "inet", table], { stdout: "ignore", stderr: "ignore" });
    }
  }, 120_000);

  test("restore failing, then killed, after its 20 connections left repair mode: each time they close silently, nothing lingers on the port, the dump's lock stays, and another restore brings them back", async () => {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const w = await startWorkload("tcpserver", [String(port), "--expect=20"]);
    // a client that waits without sending: nothing unread on the server's side, so a socket of
    // its closed the normal way would linger in FIN_WAIT (one with unread data resets at once);
    // 20 connections: more than one sentinel's 14
    const { client, tripCount } = quietClient(w, port, 20);
    const serverSide = () => onPort(port, "sport");
    const table = `CRIU-criu-bun-${w.pid}`;
    try {
      await until(() => tripCount() >= 1, "a round trip before the dump", 30000);
      const dir = imagesDir("repair-left");
      dump(w.pid, dir, ["--tcp-established"]);
      await waitReaped(w.pid);
      for (const how of ["fails", "killed"]) {
        const r = Bun.spawnSync([...criuBunCommand(), "restore", "-D", dir, "-d"], {
          stdout: "ignore",
          stderr: "pipe",
          env: {
            ...process.env,
            ...(how === "fails" ? { CRIU_BUN_FAULT: "restore-repair-left" } : { CRIU_BUN_DIE: "restore-lift-held" }),
          },
        });
        if (how === "fails")
          expect({ code: r.exitCode, err: r.stderr.toString() }).toEqual({
            code: 1,
            err: "Error (restore): injected fault 'restore-repair-left' (CRIU_BUN_FAULT)\n",
          });
        else expect(r.signalCode).toBe("SIGKILL");
        await treeGone(w, `restore ${how}`);
        // (killed: the sentinels run as criu-bun's fds close, they may finish after the tree is gone)
        await until(() => serverSide() === "", `restore ${how}: the server's sockets gone: ${serverSide()}`);
        await holdsFor(`restore ${how}: nothing of the server's on its port`, () => serverSide() === "", 1000);
        expect(listLockTables()).toEqual([table]);
      }
      await restoresAgain(w, dir, port, () =>
        until(
          () =>
            serverSide()
              .split("\n")
              .filter((l) => l.startsWith("ESTAB")).length === 20,
          `20 connections established again: ${serverSide()}`
        )
      );
    } finally {
      client.kill("SIGKILL");
      Bun.spawnSync(["nft", "delete", "table", "inet", table], { stdout: "ignore", stderr: "ignore" });
    }
  }, 120_000);

  test("dump (with a locked TCP connection) and restore: targets untraced and running, no puppet, no lock, no half dump", async () => {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const w = await startWorkload("tcpserver", [String(port), "--expect=1"]);
    const { client, tripCount } = roundTrips(w, port);
    /** the connection works: round trips go on (stopped by a socket left in repair mode, whose reads fail, or by a lock left behind) */
    const flowing = async (what: string) => {
      const n = tripCount();
      await until(() => tripCount() >= n + 3, `${what}: round trips stopped at ${n}`, 30000);
    };
    try {
      await flowing("before");
      // a dump killed while it holds the connection (all collected, images being written): the
      // server runs on and its connection works (repair mode was on there until the dump ended)
      {
        const pause = join(w.dir, "pause-dump");
        const p = Bun.spawn(
          [...criuBunCommand(), "dump", "-t", String(w.pid), "-D", imagesDir("kill-paused"), "--tcp-established", "-R"],
          {
            stdout: "ignore",
            stderr: "pipe",
            env: { ...process.env, CRIU_BUN_PAUSE: "dump-written", CRIU_BUN_PAUSE_FILE: pause },
          }
        );
        await until(() => existsSync(pause) || p.exitCode !== null, "the dump to reach dump-written", 60000);
        if (p.exitCode !== null) expect(await new Response(p.stderr).text()).toBe("(paused at dump-written)");
        p.kill("SIGKILL");
        await p.exited;
        rmSync(pause, { force: true });
        await until(() => tracer(w.pid) === 0, `${w.pid} still traced`);
        await lockGone();
        await flowing("dump killed at dump-written");
      }
      // killed while the connection is in repair mode (its queues being read), the server polling
      // it every 5 ms: its threads were parked (Injector.park), so none of them runs before the
      // sentinel has taken the socket out of repair mode (a dead tracer lets its threads run at once)
      for (let i = 0; i < 3; i++) {
        const r = Bun.spawnSync(
          [...criuBunCommand(), "dump", "-t", String(w.pid), "-D", imagesDir("kill-repair"), "--tcp-established", "-R"],
          { stdout: "ignore", stderr: "ignore", env: { ...process.env, CRIU_BUN_DIE: "tcp-repair" } }
        );
        expect(r.signalCode).toBe("SIGKILL");
        await until(() => tracer(w.pid) === 0, `${w.pid} still traced`);
        await lockGone();
        await flowing(`dump ${i} killed in the repair window`);
      }
      // how long a whole dump takes here, to spread the kills over it
      const full = imagesDir("kill-full");
      const t0 = performance.now();
      const d0 = criuBun(["dump", "-t", String(w.pid), "-D", full, "--tcp-established", "-R"]);
      expect(d0.stderr).toBe("");
      const span = performance.now() - t0;
      expect(listLockTables()).toEqual([]);
      for (let i = 0; i < 14; i++) {
        const dir = imagesDir("kill-dump");
        await killedAfter(["dump", "-t", String(w.pid), "-D", dir, "--tcp-established", "-R"], rnd() * span);
        // the target runs on, nobody traces it, no lock of the dead criu-bun is left
        await until(() => tracer(w.pid) === 0 || !isAlive(w.pid), `dump ${i}: ${w.pid} still traced`);
        // killed at any moment (inside an injected syscall too: guard.ts), the target runs on
        expect({ i, alive: isAlive(w.pid) }).toEqual({ i, alive: true });
        await lockGone();
        // a dump is complete (inventory.img, written last) or does not look like one: killed while
        // its images were moved into place, some are there without inventory.img, and restore
        // refuses the directory in one line
        const names = readdirSync(dir);
        if (!names.includes("inventory.img")) {
          if (names.some((n) => !n.startsWith(".criu-bun-dump-"))) {
            const r = criuBun(["restore", "-D", dir, "-d"]);
            expect({ i, code: r.code, err: r.stderr }).toEqual({
              i,
              code: 1,
              err: `Error (restore): ${dir}/inventory.img is missing\n`,
            });
          }
        } else expect(names).toContain("pstree.img");
      }
      await flowing("after the killed dumps");
      // restore: dump for real (the lock stays for the restore), then kill restores
      const dumpLock = [`CRIU-criu-bun-${w.pid}`];
      const dir = imagesDir("kill-restore");
      dump(w.pid, dir, ["--tcp-established"]);
      expect(listLockTables()).toEqual(dumpLock);
      await waitReaped(w.pid);
      const t1 = performance.now();
      let restored = false;
      for (let i = 0; i < 14 && !restored; i++) {
        const before = listLockTables();
        await killedAfter(["restore", "-D", dir, "-d"], i === 0 ? 0 : rnd() * Math.max(span, performance.now() - t1));
        await until(() => puppets().length === 0, `restore ${i}: a puppet survives`);
        // a killed restore leaves nothing (or, killed after it finished, the restored server)
        await until(() => afterKill(w.pid) !== undefined, `restore ${i}: ${w.pid} half-built`);
        restored = afterKill(w.pid) === "running";
        // restored: no lock of any criu-bun is left (the dump's went before the release, the
        // restore's own with its criu-bun); not restored: the dump's lock stays for the next try
        // (unless the kill came between that handover and the release: then none is left)
        const tables = listLockTables();
        if (restored) expect({ i, tables }).toEqual({ i, tables: [] });
        else expect({ i, tables: tables.filter((t) => !before.includes(t)) }).toEqual({ i, tables: [] });
      }
      if (restored) {
        // once more, for the kill at a known moment below
        dump(w.pid, dir, ["--tcp-established"]);
        expect(listLockTables()).toEqual(dumpLock);
        await waitReaped(w.pid);
      }
      // criu-bun killed right after it let the restored tree go (before it lifted any lock, which
      // the test used to do by hand): the server runs, untraced, and no table is left
      const pause = join(w.dir, "pause");
      const p = Bun.spawn([...criuBunCommand(), "restore", "-D", dir, "-d"], {
        stdout: "ignore",
        stderr: "pipe",
        env: { ...process.env, CRIU_BUN_PAUSE: "restore-released", CRIU_BUN_PAUSE_FILE: pause },
      });
      await until(() => existsSync(pause) || p.exitCode !== null, "the restore to reach restore-released", 60000);
      if (p.exitCode !== null) expect(await new Response(p.stderr).text()).toBe("(paused at restore-released)");
      p.kill("SIGKILL");
      await p.exited;
      rmSync(pause, { force: true });
      expect(isAlive(w.pid)).toBe(true);
      expect(tracer(w.pid)).toBe(0);
      // the dump's table is deleted by the sentinel freed at the release (inet.ts netRestoreHoldLift)
      // once it reads criu-bun gone: a moment after criu-bun's death, not at it (this restore's own
      // table went with criu-bun, its owner)
      await lockGone();
      await holdsFor(
        "the restored server running with no lock table",
        () => isAlive(w.pid) && listLockTables().length === 0,
        300
      );
      expect(puppets()).toEqual([]);
      // the server checks its connection's options (SO_REUSEADDR among them: repair mode resets
      // it, so each -R dump above had to put it back in the running server, and the last dump
      // had to read the server's own value) and that no socket error ever came
      trigger(w);
      const res = await waitResult(w, 30_000);
      expect(res.summary).toBe("PASS");
    } finally {
      client.kill("SIGKILL");
    }
  }, 240_000);

  /**
   * The register workload (regs.c: patterns in general, vector, MXCSR and x87 registers checked
   * on every turn, a read() and a nanosleep() that must be restarted) runs on as before: alive,
   * untraced, no FAIL of its own for a moment, and nothing of the dead criu-bun in its way.
   */
  async function untouched(w: Workload, what: string) {
    await until(() => tracer(w.pid) === 0 || !isAlive(w.pid), `${what}: ${w.pid} still traced`);
    const res = join(w.dir, "result");
    const state = () => ({
      what,
      alive: isAlive(w.pid),
      result: existsSync(res) ? readFileSync(res, "utf8").split("\n")[0] : "",
    });
    await holdsFor(
      `${what}: the target runs on untouched (${JSON.stringify(state())})`,
      () => state().alive && !state().result,
      150
    ).catch(() => {});
    expect(state()).toEqual({ what, alive: true, result: "" });
  }

  test("dump killed at every step of its injected syscalls: the target's registers, FPU state and interrupted syscalls are untouched", async () => {
    const w = await startWorkload("regs");
    // how many guarded calls and sessions (one per thread, and the leader's) a dump makes here
    const full = imagesDir("kill-regs-log");
    const d0 = criuBun(["dump", "-t", String(w.pid), "-D", full, "-R", "-v4", "-o", "dump.log"]);
    expect(d0.code).toBe(0);
    const log = readFileSync(join(full, "dump.log"), "utf8");
    expect(log).not.toContain("not guarded");
    const sessions = (log.match(/injected syscalls guarded \(/g) ?? []).length;
    const calls = (log.match(/: injected \w+\(/g) ?? []).length + sessions; // + each session's rt_sigprocmask (not logged)
    expect(sessions).toBe(4); // the leader's task state (its own thread's queries in that batch), then each of its 3 other threads
    // the first call (its rt_sigprocmask: no entry-stop rewrite), the second, and the last (a thread's);
    // run1/run2: the thread sits in its syscall stop and criu-bun has not collected it yet
    const points: string[] = [];
    for (const n of [1, 2, calls])
      for (const p of ["set", "run1", "entry", "poked", "run2", "exit"])
        if (n > 1 || p !== "poked") points.push(`inject-${n}-${p}`);
    for (const k of [1, sessions]) points.push(`inject-restored-${k}`);
    // the leader's task state: most of its calls in one guarded batch (Injector.guardedBatch), killed
    // with its table written and its registers set, while it runs, and at its own signal's stop
    expect(log).toContain("guarded batch of ");
    for (const p of ["set", "run", "stop"]) points.push(`batch-1-${p}`);
    for (const point of points) {
      const dir = imagesDir("kill-regs");
      const r = Bun.spawnSync([...criuBunCommand(), "dump", "-t", String(w.pid), "-D", dir, "-R"], {
        stdout: "ignore",
        stderr: "pipe",
        env: { ...process.env, CRIU_BUN_DIE: point },
      });
      expect({ point, signal: r.signalCode, stderr: r.stderr.toString() }).toEqual({
        point,
        signal: "SIGKILL",
        stderr: "",
      });
      await untouched(w, `killed at ${point}`);
      expect(readdirSync(dir).filter((n) => !n.startsWith(".criu-bun-dump-"))).toEqual([]);
    }
    // and a dump that is not killed still works after all that (the stub left in the vDSO reused)
    const after = imagesDir("kill-regs-after");
    const d1 = criuBun(["dump", "-t", String(w.pid), "-D", after, "-R", "-v4", "-o", "dump.log"]);
    expect(d1.code).toBe(0);
    expect(readFileSync(join(after, "dump.log"), "utf8")).not.toContain("not guarded");
    await untouched(w, "after a whole dump");
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
  }, 240_000);

  test("dump killed at random moments: the register workload runs on untouched every time", async () => {
    const w = await startWorkload("regs");
    const t0 = performance.now();
    expect(criuBun(["dump", "-t", String(w.pid), "-D", imagesDir("kill-regs-full"), "-R"]).code).toBe(0);
    const span = performance.now() - t0;
    for (let i = 0; i < 12; i++) {
      const dir = imagesDir("kill-regs-random");
      const delay = rnd() * span;
      await killedAfter(["dump", "-t", String(w.pid), "-D", dir, "-R"], delay);
      await untouched(w, `dump ${i} killed after ${Math.round(delay)} ms`);
      // complete, or not marked complete (a kill while the images are moved into place leaves
      // some of them, without inventory.img: restore refuses that)
      const names = readdirSync(dir);
      if (names.includes("inventory.img")) expect(names).toContain("pstree.img");
    }
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
  }, 240_000);
});
