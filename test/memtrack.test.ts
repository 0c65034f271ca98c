// Memory tracking without soft-dirty (userfaultfd write-protect, async mode, with PAGEMAP_SCAN):
// a pre-dump arms it, the next pre-dump or dump reads only the pages written since, and the
// restored process has every page of its last generation. The tracking never shows in the
// restored process and is gone from a process that lives on after the final dump.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, readFileSync, readdirSync, readlinkSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import {
  buildWorkloads,
  cleanup,
  startWorkload,
  trigger,
  waitResult,
  waitUntil,
  criuBun,
  isAlive,
  type Workload,
} from "./harness";
import { imagesDir, cleanupImages, restore, waitReaped } from "./engine-helpers";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
afterAll(() => {
  cleanup();
  cleanupImages();
});

const MIB = 64,
  PAGES = (MIB << 20) / 4096;
const supported = criuBun(["check", "--feature", "uffd_wp_async"]).code === 0;

/** Ask the workload to rewrite these pages (its generation `n`), and wait until it has. */
async function touch(w: Workload, n: number, pages: number[]) {
  writeFileSync(join(w.dir, `touch-${n}.tmp`), pages.join("\n") + "\n");
  require("node:fs").renameSync(join(w.dir, `touch-${n}.tmp`), join(w.dir, `touch-${n}`));
  await waitUntil(`the workload to write generation ${n}`, () => existsSync(join(w.dir, `touched-${n}`)), 10000);
  expect(readFileSync(join(w.dir, `touched-${n}`), "utf8").trim()).toBe(String(pages.length));
}

function stats(out: string) {
  const n = (k: string) => Number(new RegExp(`Memory pages ${k}: (\\d+)`).exec(out)![1]);
  return { scanned: n("scanned"), written: n("written") };
}

const uffdFds = (pid: number) =>
  readdirSync(`/proc/${pid}/fd`).filter((f) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${f}`).includes("userfaultfd");
    } catch {
      return false;
    }
  });
/** Restore the workload from dir; it must run without a userfaultfd and report every page right. */
async function restoreAndCheck(w: Workload, dir: string) {
  await waitReaped(w.pid);
  const rr = await restore(dir, w.pid);
  expect(uffdFds(w.pid)).toEqual([]);
  trigger(w);
  const res = await waitResult(w, 20000);
  if (!res.pass) console.error(res.text);
  expect(res.text).toStartWith("PASS");
  expect(await rr.proc.exited).toBe(0);
}

const range = (from: number, n: number, step = 1) => Array.from({ length: n }, (_, i) => from + i * step);

describe.skipIf(!supported)("memory tracking (uffd-wp async)", () => {
  test("pre-dump, pre-dump, pre-dump, dump: each reads only what was written since; the restore has every page's last generation", async () => {
    const w = await startWorkload("dirty", [String(MIB)]);
    const base = imagesDir("memtrack");
    const dirs = ["pre1", "pre2", "pre3", "final"];
    for (const d of dirs) mkdirSync(join(base, d));
    let r = criuBun(["pre-dump", "-t", String(w.pid), "-D", join(base, "pre1"), "-o", "dump.log", "-v4"]);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
    expect(readFileSync(join(base, "pre1", "dump.log"), "utf8")).toContain("memory tracking armed");
    expect(uffdFds(w.pid).length).toBe(1); // armed: kept in the process between runs
    // three generations, each writing other pages (and some again)
    const writes = [range(0, 100, 7), range(5000, 300), range(10, 50, 13)];
    for (let i = 0; i < 3; i++) {
      await touch(w, i + 1, writes[i]);
      const last = i === 2;
      const dir = dirs[i + 1];
      r = criuBun([
        last ? "dump" : "pre-dump",
        "-t",
        String(w.pid),
        "-D",
        join(base, dir),
        "--prev-images-dir",
        `../${dirs[i]}`,
        "--display-stats",
        "-o",
        "dump.log",
        "-v4",
      ]);
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
      const s = stats(r.stdout);
      // only the written pages (and the little else the process touched: stack, its bookkeeping)
      // are read, not its 64 MiB
      expect(s.scanned).toBeGreaterThanOrEqual(writes[i].length);
      expect(s.scanned).toBeLessThan(writes[i].length + 200);
      expect(s.scanned).toBeLessThan(PAGES / 20);
      expect(readFileSync(join(base, dir, "dump.log"), "utf8")).toMatch(
        /tracked memory: \d+ pages written since the previous dump, \d+ taken from it/
      );
      // the tracking fd is never saved as the process's own
      const fdinfo = Bun.spawnSync(["crit", "x", join(base, dir), "fds"]).stdout.toString();
      expect(fdinfo).not.toContain("userfaultfd");
    }
    await restoreAndCheck(w, join(base, "final"));
  }, 120_000);

  test("a -R dump after a pre-dump reads only written pages and takes the tracking out of the running process", async () => {
    const w = await startWorkload("dirty", [String(MIB)]);
    const base = imagesDir("memtrack-r");
    for (const d of ["pre", "final"]) mkdirSync(join(base, d));
    expect(criuBun(["pre-dump", "-t", String(w.pid), "-D", join(base, "pre")]).code).toBe(0);
    expect(uffdFds(w.pid).length).toBe(1);
    expect(readFileSync(`/proc/${w.pid}/smaps`, "latin1")).toMatch(/VmFlags:.* uw/);
    await touch(w, 1, range(100, 40));
    const r = criuBun([
      "dump",
      "-R",
      "-t",
      String(w.pid),
      "-D",
      join(base, "final"),
      "--prev-images-dir",
      "../pre",
      "--display-stats",
    ]);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
    expect(stats(r.stdout).scanned).toBeLessThan(PAGES / 20);
    expect(isAlive(w.pid)).toBe(true);
    expect(uffdFds(w.pid)).toEqual([]); // tracking gone from the process that runs on
    // it keeps working, and the images restore it
    await touch(w, 2, range(200, 10));
    process.kill(w.pid, "SIGKILL");
    // the restored process is the one of the -R dump: generation 1 in its pages and in its own
    // bookkeeping (generation 2 came after)
    await restoreAndCheck(w, join(base, "final"));
  }, 120_000);

  test("a private file mapping is tracked too: pages written since the pre-dump are read, its other private pages come from the parent, a page dropped since (MADV_DONTNEED: the file's again) does not", async () => {
    const w = await startWorkload("filepriv.py");
    const base = imagesDir("memtrack-file");
    for (const d of ["pre", "final"]) mkdirSync(join(base, d));
    let r = criuBun(["pre-dump", "-t", String(w.pid), "-D", join(base, "pre"), "-o", "dump.log", "-v4"]);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
    // the writable private mapping of DIR/data is registered: its pages are write-protected
    const smaps = readFileSync(`/proc/${w.pid}/smaps`, "latin1");
    const entry = smaps.split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/).find((e) => e.includes(join(w.dir, "data")));
    expect(entry).toMatch(/VmFlags:.* uw/);
    writeFileSync(join(w.dir, "step-1"), "");
    await waitUntil("the workload's step", () => existsSync(join(w.dir, "stepped-1")), 10000);
    r = criuBun([
      "dump",
      "-t",
      String(w.pid),
      "-D",
      join(base, "final"),
      "--prev-images-dir",
      "../pre",
      "--display-stats",
      "-o",
      "dump.log",
      "-v4",
    ]);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
    const log = readFileSync(join(base, "final", "dump.log"), "utf8");
    // python3's own mappings are tracked too; of the data mapping only the 5 written pages are read
    expect(log).toMatch(/tracked memory: \d+ pages written since the previous dump/);
    expect(stats(r.stdout).scanned).toBeLessThan(400);
    // pages 5 and 6 are the file's again (their private copies went): no PE_PARENT run covers them
    const pm = JSON.parse(
      Bun.spawnSync(["crit", "decode", "-i", join(base, "final", `pagemap-${w.pid}.img`)]).stdout.toString()
    );
    const mapAt = BigInt(`0x${entry!.split("-")[0]}`);
    const covered = (p: number) =>
      pm.entries.slice(1).some((e: { vaddr: string | number; nr_pages: number }) => {
        const a = BigInt(e.vaddr);
        const at = mapAt + BigInt(p * 4096);
        return at >= a && at < a + BigInt(e.nr_pages) * 4096n;
      });
    expect([0, 2, 7, 20].map(covered)).toEqual([true, true, true, true]);
    expect([5, 6, 30].map(covered)).toEqual([false, false, false]);
    await restoreAndCheck(w, join(base, "final"));
  }, 120_000);

  test("tracking ended by the process itself (close_range) falls back to comparing contents, and the pages come back right", async () => {
    const w = await startWorkload("dirty", ["8"]);
    const base = imagesDir("memtrack-fallback");
    for (const d of ["pre", "final"]) mkdirSync(join(base, d));
    expect(criuBun(["pre-dump", "-t", String(w.pid), "-D", join(base, "pre")]).code).toBe(0);
    expect(uffdFds(w.pid).length).toBe(1);
    writeFileSync(join(w.dir, "close-fds"), "");
    await waitUntil("the workload to close its fds", () => existsSync(join(w.dir, "closed-fds")));
    expect(uffdFds(w.pid)).toEqual([]);
    await touch(w, 1, range(0, 20));
    const r = criuBun([
      "dump",
      "-t",
      String(w.pid),
      "-D",
      join(base, "final"),
      "--prev-images-dir",
      "../pre",
      "--display-stats",
      "-o",
      "dump.log",
      "-v4",
    ]);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
    expect(readFileSync(join(base, "final", "dump.log"), "utf8")).toContain(
      "memory tracking from the previous dump is gone"
    );
    await restoreAndCheck(w, join(base, "final"));
  }, 120_000);
});
