// Interop with CRIU 4.2, second part: states one of the two tools could not take from the other.
// Each is restored exactly both ways, or the side that cannot fails loudly with nothing left behind
// (rows in test/EXACT-OR-REFUSED.md). Workloads check their own state after the restore.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  buildWorkloads,
  cleanup,
  criuBun,
  isAlive,
  startWorkload,
  trigger,
  waitResult,
  waitUntil,
  type Workload,
} from "./harness";
import { cleanupImages, dump, havePeer, imagesDir, peer, restore, waitReaped } from "./engine-helpers";
import { readImage } from "../src/images/image";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
afterAll(() => {
  cleanup();
  cleanupImages();
});

const treePids = (dir: string) => readImage(dir, "pstree.img", "PSTREE").map((p) => p.pid);
async function treeGone(dir: string) {
  for (const p of treePids(dir)) await waitReaped(p, 10_000);
}

/** CRIU 4.2 restores DIR (-d) and the workload's own check passes */
async function criuRestores(dir: string, w: Workload) {
  await treeGone(dir);
  try {
    peer(["restore", "-d"], dir, "restore.log");
    await waitUntil(`restored ${w.pid}`, () => existsSync(`/proc/${w.pid}`));
    trigger(w);
    expect((await waitResult(w, 15_000)).text).toStartWith("PASS");
  } finally {
    for (const p of treePids(dir))
      try {
        process.kill(p, "SIGKILL");
      } catch {}
  }
}

/** CRIU 4.2's restore of DIR fails with an error line matching `error`, and no process of the tree is left */
async function criuRefuses(dir: string, error: RegExp) {
  await treeGone(dir);
  let failure = "";
  try {
    peer(["restore", "-d"], dir, "restore.log");
  } catch (e) {
    failure = String(e);
  }
  expect(failure).toMatch(error);
  for (const p of treePids(dir)) await waitUntil(`process ${p} gone`, () => !existsSync(`/proc/${p}`), 10_000);
}

/** criu-bun restores DIR and the workload's own check passes */
async function bunRestores(dir: string, w: Workload) {
  await treeGone(dir);
  const r = await restore(dir, w.pid, [], 20_000);
  trigger(w);
  expect((await waitResult(w, 15_000)).text).toStartWith("PASS");
  expect(await r.proc.exited).toBe(0);
}

// ---- inotify watches on a symlink itself (IN_DONT_FOLLOW): notifyfix dontfollow ----
// CRIU 4.2 saves no path for such a watch (the path it finds, the symlink's, opens another inode
// when followed), only the file handle, and its restore, which follows a path, cannot open it: it
// fails on its own image. criu-bun saves the same (a path there would give CRIU's restore the
// symlink's target: a watch on the wrong inode) and finds the symlink through the handle.
describe.skipIf(!havePeer)("an inotify watch on a symlink itself", () => {
  test("criu-bun saves it as CRIU 4.2 does (no path, the handle), restores it itself; CRIU 4.2's restore fails loudly on it, as on its own", async () => {
    const w = await startWorkload("notifyfix", ["dontfollow"], { stderr: "file" });
    const dir = imagesDir("interop2-dontfollow-bun");
    dump(w.pid, dir);
    const wds = readImage(dir, "files.img", "FILES")
      .find((f) => f.ify)!
      .ify!.wd.sort((a, b) => a.wd - b.wd);
    expect(wds.map((x) => [x.wd, x.fHandle!.path.replace(/.*\//, "")])).toEqual([
      [1, "d"],
      [2, ""], // the symlink l itself
      [3, "f"], // through the symlink fl: the file
    ]);
    await criuRefuses(dir, /fsnotify: Unable to open/);
    await bunRestores(dir, w);
  }, 60_000);

  test("CRIU 4.2 dumps it, criu-bun restores it through the file handle: still on the symlink", async () => {
    const w = await startWorkload("notifyfix", ["dontfollow"], { stderr: "file" });
    const dir = imagesDir("interop2-dontfollow-criu");
    peer(["dump", "-t", String(w.pid)], dir, "dump.log");
    await bunRestores(dir, w);
  }, 60_000);
});

// ---- a live file whose name ends in " (deleted)": deleted.c named (a file held, mapped and
// watched by inotify, and a FIFO, each named "... (deleted)") ----
// /proc shows a removed file's name with " (deleted)" appended; a live file may have that name
// itself. As CRIU 4.2 decides (files-reg.c): no links left is removed (a ghost file), links and the
// name as read still that inode is the live file, opened by that name. The workload's real deleted
// file beside it stays a ghost file in both tools' images.
describe.skipIf(!havePeer)('a live file named "named (deleted)" beside a deleted one', () => {
  const check = (dir: string) => {
    const files = readImage(dir, "files.img", "FILES");
    const names = files.filter((f) => f.reg).map((f) => f.reg!.name.replace(/.*\//, ""));
    expect(names).toContain("named (deleted)");
    expect(names).toContain("fifo (deleted)"); // the FIFO's path entry
    expect(files.some((f) => f.fifo)).toBe(true);
    const wds = files.find((f) => f.ify)!.ify!.wd;
    expect(wds.map((x) => [x.wd, x.fHandle!.path.replace(/.*\//, "")])).toEqual([[1, "named (deleted)"]]);
    const ghosts = readImage(dir, "remap-fpath.img", "REMAP_FPATH").map((r) =>
      files.find((f) => f.id === r.origId)!.reg!.name.replace(/.*\//, "")
    );
    expect(ghosts).toEqual(["deleted"]);
  };
  for (const [dumper, restorer] of [
    ["criu-bun", "criu-bun"],
    ["criu-bun", "criu-4.2"],
    ["criu-4.2", "criu-bun"],
  ] as const)
    test(`${dumper} dumps it, ${restorer} restores it: the same linked file (fd, offset, shared mapping, inotify watch) and FIFO, the deleted one a ghost`, async () => {
      const w = await startWorkload("deleted", ["named"]);
      const dir = imagesDir(`interop2-named-${dumper}-${restorer}`);
      if (dumper === "criu-bun") dump(w.pid, dir);
      else peer(["dump", "-t", String(w.pid)], dir, "dump.log");
      check(dir);
      if (restorer === "criu-bun") await bunRestores(dir, w);
      else await criuRestores(dir, w);
    }, 60_000);
});

// ---- a FIFO in packet mode (F_SETFL O_DIRECT): notifyfix fifodirect ----
// open() refuses O_DIRECT on a FIFO (EINVAL); CRIU 4.2 opens each FIFO end with its saved flags and
// sets nothing after, so it cannot bring packet mode back: its restore fails on its own image of
// one, and on criu-bun's (the same flags; without O_DIRECT CRIU would restore a FIFO in normal mode,
// silently). criu-bun opens it without O_DIRECT and sets it with F_SETFL: it restores both.
describe.skipIf(!havePeer)("a FIFO switched to packet mode", () => {
  for (const dumper of ["criu-bun", "criu-4.2"] as const)
    test(`${dumper} dumps it: CRIU 4.2's restore fails loudly (open with O_DIRECT: EINVAL), criu-bun restores it`, async () => {
      const w = await startWorkload("notifyfix", ["fifodirect"], { stderr: "file" });
      const dir = imagesDir(`interop2-fifodirect-${dumper}`);
      if (dumper === "criu-bun") dump(w.pid, dir);
      else peer(["dump", "-t", String(w.pid)], dir, "dump.log");
      const files = readImage(dir, "files.img", "FILES");
      const regs = files.filter((f) => f.fifo).map((f) => files.find((r) => r.id === f.fifo!.regfId)!.reg!);
      expect(regs.length).toBe(2);
      for (const r of regs) expect(r.flags & 0o40000 /* O_DIRECT */).toBe(0o40000);
      await criuRefuses(dir, /Can't open fifo .*pf\]: Invalid argument/);
      await bunRestores(dir, w);
    }, 60_000);
});

// ---- SysV shared memory attached in the host's IPC namespace (no IPC namespace of the tree's own) ----
// CRIU 4.2 refuses to dump it ("with SysVIPC shmem map ... doesn't live in IPC ns": it saves SysV
// segments only with the tree's own IPC namespace) and leaves the target running. criu-bun dumps it
// (the segments in ipcns-shm-1.img, its own image: CRIU writes none for the host namespace) and
// restores it exactly, the segments made again with their ids in the host namespace. CRIU 4.2's
// restore of that image fails loudly: with no IPC namespace to restore it knows no segment for the
// VMAs ("Can't find sysv shmem"), whatever the host namespace holds, and leaves no process behind.
describe.skipIf(!havePeer)("SysV shared memory in the host's IPC namespace", () => {
  const dropSegments = (dir: string) => {
    const ids = readImage(dir, "ipcns-shm-1.img", "IPCNS_SHM").map((s) => s.desc!);
    const live = readFileSync("/proc/sysvipc/shm", "utf8").split("\n").slice(1);
    for (const d of ids) {
      const row = live
        .map((l) => l.trim().split(/\s+/))
        .find((f) => Number(f[1]) === d.id && Number(f[0]) >>> 0 === d.key);
      if (row && Number(row[6]) === 0) Bun.spawnSync(["ipcrm", "-m", String(d.id)]);
    }
  };
  test("CRIU 4.2 refuses to dump it, the target running on", async () => {
    const w = await startWorkload("sysvshm", ["nodest"]);
    const dir = imagesDir("interop2-sysv-host-criu");
    expect(() => peer(["dump", "-t", String(w.pid)], dir, "dump.log")).toThrow(
      /SysVIPC shmem map .* doesn't live in IPC ns/
    );
    expect(isAlive(w.pid)).toBe(true);
    trigger(w);
    expect((await waitResult(w, 15_000)).text).toStartWith("PASS");
  }, 60_000);
  test("criu-bun dumps it: CRIU 4.2's restore fails loudly and leaves nothing; criu-bun restores it exactly", async () => {
    const w = await startWorkload("sysvshm");
    const dir = imagesDir("interop2-sysv-host-bun");
    dump(w.pid, dir);
    try {
      const ids = readImage(dir, `ids-${w.pid}.img`, "IDS")[0];
      expect(existsSync(join(dir, `ipcns-shm-${ids.ipcNsId}.img`)) && ids.ipcNsId !== 1).toBe(false);
      expect(readImage(dir, "ipcns-shm-1.img", "IPCNS_SHM").length).toBe(3);
      const before = readFileSync("/proc/sysvipc/shm", "utf8");
      await criuRefuses(dir, /Can't find sysv shmem for \d+/);
      expect(readFileSync("/proc/sysvipc/shm", "utf8")).toBe(before); // CRIU touched no segment
      await bunRestores(dir, w);
    } finally {
      for (const p of treePids(dir)) await waitReaped(p, 10_000).catch(() => {});
      dropSegments(dir);
    }
  }, 60_000);
  test("criu-bun's restore leaves another segment that took a saved id alone: it fails, naming it", async () => {
    const w = await startWorkload("sysvshm");
    const dir = imagesDir("interop2-sysv-host-taken");
    dump(w.pid, dir);
    let other = -1;
    try {
      await treeGone(dir);
      // A (marked IPC_RMID) went with the tree: another segment takes its id
      const a = readImage(dir, "ipcns-shm-1.img", "IPCNS_SHM").find((x) => Number(x.size) === 20580)!.desc!;
      expect(readFileSync("/proc/sysvipc/shm", "utf8")).not.toMatch(new RegExp(`^\\s*\\d+\\s+${a.id}\\s`, "m"));
      writeFileSync("/proc/sys/kernel/shm_next_id", String(a.id));
      const r = Bun.spawnSync(["python3", "-c", "import ctypes,sys; print(ctypes.CDLL(None).shmget(0, 4096, 0o1600))"]);
      other = Number(r.stdout.toString().trim());
      expect(other).toBe(a.id);
      const res = criuBun(["restore", "-D", dir, "-o", "restore.log", "-v4"]);
      expect(res.code).toBe(1);
      expect(readFileSync(join(dir, "restore.log"), "utf8")).toMatch(
        new RegExp(`SysV shared memory ${a.id} exists and is another segment \\(key 0x0, 4096 bytes`)
      );
      expect(readFileSync("/proc/sysvipc/shm", "utf8")).toMatch(new RegExp(`^\\s*0\\s+${a.id}\\s+600\\s+4096\\s`, "m"));
      for (const p of treePids(dir)) expect(existsSync(`/proc/${p}`)).toBe(false);
    } finally {
      if (other >= 0) Bun.spawnSync(["ipcrm", "-m", String(other)]);
      dropSegments(dir);
    }
  }, 60_000);
});
