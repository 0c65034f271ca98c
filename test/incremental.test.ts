// pre-dump, then dump --prev-images-dir: unchanged pages are stored once, restore follows the
// parent links (a chain of two pre-dumps here).
import { afterAll, beforeAll, expect, test } from "bun:test";
import {
  mkdirSync,
  readdirSync,
  statSync,
  readlinkSync,
  existsSync,
  readFileSync,
  copyFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  openSync,
  closeSync,
  readSync,
  writeFileSync,
  mkdtempSync,
} from "node:fs";
import { join } from "node:path";
import {
  buildWorkloads,
  cleanup,
  startWorkload,
  trigger,
  waitResult,
  isAlive,
  criuBun,
  cpuTicks,
  waitUntil,
} from "./harness";
import { imagesDir, cleanupImages, restore, flipBit } from "./engine-helpers";
import { PageSource, warmParentRuns, warmParentPages, fillParentPages } from "../src/codec/incremental";
import { setLogFile, setLogLevel, logLevel } from "../src/log";
import { decodePagemap } from "../src/images/pagemap";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
/** tmpfs directories of tests, gone even when a test fails */
const shmDirs: string[] = [];
afterAll(() => {
  cleanup();
  cleanupImages();
  for (const d of shmDirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** until the spinning workload has had the CPU again since the last dump (its counter page changed) */
async function ranOn(pid: number) {
  const t = cpuTicks(pid);
  await waitUntil(`${pid} to run on`, () => cpuTicks(pid) > t);
}

test("pre-dump, pre-dump, dump: the last one stores only what changed and restores through its parents", async () => {
  const w = await startWorkload("spin", ["32", "--pattern=heap"]);
  const base = imagesDir("incr");
  for (const d of ["pre1", "pre2", "final"]) mkdirSync(join(base, d));
  let r = criuBun(["pre-dump", "-t", String(w.pid), "-D", join(base, "pre1"), "--track-mem"]);
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
  expect(isAlive(w.pid)).toBe(true); // pre-dump leaves it running
  r = criuBun([
    "pre-dump",
    "-t",
    String(w.pid),
    "-D",
    join(base, "pre2"),
    "--prev-images-dir",
    "../pre1",
    "--track-mem",
  ]);
  expect(r.code).toBe(0);
  r = criuBun([
    "dump",
    "-t",
    String(w.pid),
    "-D",
    join(base, "final"),
    "--prev-images-dir",
    "../pre2",
    "--track-mem",
    "-v4",
    "-o",
    "dump.log",
  ]);
  expect(r.code).toBe(0);
  expect(readlinkSync(join(base, "final", "parent"))).toBe("../pre2");
  const size = (d: string) =>
    readdirSync(join(base, d))
      .filter((f) => /^pages-\d+\.img$/.test(f))
      .reduce((s, f) => s + statSync(join(base, d, f)).size, 0);
  expect(size("pre1")).toBeGreaterThan(20 << 20); // the heap
  expect(size("final")).toBeLessThan(size("pre1") / 20); // only the pages that changed
  const pm = JSON.parse(
    Bun.spawnSync(["crit", "decode", "-i", join(base, "final", `pagemap-${w.pid}.img`), "--pretty"]).stdout.toString()
  );
  expect(pm.entries.some((e: any) => e.flags === "PE_PARENT")).toBe(true);
  const rr = await restore(join(base, "final"), w.pid);
  trigger(w);
  expect((await waitResult(w, 15000)).text).toStartWith("PASS"); // its memory hash matches
  expect(await rr.proc.exited).toBe(0);
  expect(existsSync(join(base, "pre1", `pagemap-${w.pid}.img`))).toBe(true);
});

test("an incremental dump's own pages carry checksums: a flipped bit stops restore before anything runs", async () => {
  const w = await startWorkload("spin", ["8", "--pattern=heap"]);
  const base = imagesDir("incr-flip");
  for (const d of ["pre", "final"]) mkdirSync(join(base, d));
  expect(criuBun(["pre-dump", "-t", String(w.pid), "-D", join(base, "pre")]).code).toBe(0);
  await ranOn(w.pid); // the counter, its stack and timers move on: some pages change
  const r = criuBun(["dump", "-t", String(w.pid), "-D", join(base, "final"), "--prev-images-dir", "../pre"]);
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
  await w.proc!.exited;
  const file = join(base, "final", "pages-1.img");
  expect(existsSync(join(base, "final", "pages-1.idx"))).toBe(true);
  expect(statSync(file).size).toBeGreaterThan(0);
  expect(statSync(file).size).toBeLessThan(8 << 20); // only what changed
  flipBit(file);
  const rr = criuBun(["restore", "-D", join(base, "final")]);
  expect(rr.code).not.toBe(0);
  expect(rr.stderr).toContain(file);
  expect(rr.stderr).toMatch(/checksum mismatch/);
  expect(isAlive(w.pid)).toBe(false); // nothing was left under the old PID
});

test("--compress with pre-dump and --prev-images-dir: LZ4 pages at every level, restore decodes the parents", async () => {
  const w = await startWorkload("spin", ["24", "--pattern=heap"]);
  const base = imagesDir("incr-z");
  for (const d of ["pre", "final"]) mkdirSync(join(base, d));
  let r = criuBun(["pre-dump", "-t", String(w.pid), "-D", join(base, "pre"), "--compress"]);
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
  await ranOn(w.pid);
  r = criuBun([
    "dump",
    "-t",
    String(w.pid),
    "-D",
    join(base, "final"),
    "--prev-images-dir",
    "../pre",
    "--compress",
    "-v4",
    "-o",
    "dump.log",
  ]);
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
  for (const d of ["pre", "final"]) {
    expect(existsSync(join(base, d, "pages-1.lz4"))).toBe(true);
    expect(existsSync(join(base, d, "pages-1.img"))).toBe(false);
  }
  expect(statSync(join(base, "pre", "pages-1.lz4")).size).toBeGreaterThan(4 << 20); // the heap, compressed
  expect(statSync(join(base, "final", "pages-1.lz4")).size).toBeLessThan(1 << 20); // only what changed
  expect(readFileSync(join(base, "final", "dump.log"), "utf8")).toMatch(
    /pages unchanged since the previous dump, \d+ stored in pages-1\.lz4/
  );
  const rr = await restore(join(base, "final"), w.pid);
  trigger(w);
  expect((await waitResult(w, 15000)).text).toStartWith("PASS"); // memory hash: parent pages decoded right
  expect(await rr.proc.exited).toBe(0);
  // the parent's blocks are checked too: a flipped bit in pre/ stops a restore from final/
  flipBit(join(base, "pre", "pages-1.lz4"));
  const bad = criuBun(["restore", "-D", join(base, "final")]);
  expect(bad.code).not.toBe(0);
  expect(bad.stderr).toMatch(/checksum mismatch/);
  expect(bad.stderr).toContain(join(base, "pre"));
  expect(isAlive(w.pid)).toBe(false);
});

test("a damaged parent fails the incremental dump with one line, and the target carries on untouched", async () => {
  const w = await startWorkload("spin", ["8", "--pattern=heap"]);
  const base = imagesDir("incr-badparent");
  for (const d of ["pre", "final"]) mkdirSync(join(base, d));
  // content comparison reads the parent's pages (memory tracking reads only what was written since,
  // leaving a damaged parent to restore's checks, tested above)
  const env = { CRIU_BUN_MEMTRACK: "off" };
  expect(criuBun(["pre-dump", "-t", String(w.pid), "-D", join(base, "pre")], { env }).code).toBe(0);
  flipBit(join(base, "pre", "pages-1.img"));
  const r = criuBun(["dump", "-t", String(w.pid), "-D", join(base, "final"), "--prev-images-dir", "../pre"], { env });
  expect(r.code).not.toBe(0);
  expect(r.stderr).toMatch(/^Error \(dump\): --prev-images-dir \.\.\/pre: .*checksum mismatch/m);
  expect(r.stderr.trim().split("\n").length).toBe(1);
  expect(readdirSync(join(base, "final")).filter((f) => f.endsWith(".dedupe"))).toEqual([]);
  expect(isAlive(w.pid)).toBe(true);
  trigger(w);
  expect((await waitResult(w, 15000)).text).toStartWith("PASS"); // never stopped for good, state intact
});

test("parent pagemaps decoded ahead (migrate's PRECHECK) are used only while their files are the same: replaced images are read as they are now", async () => {
  // two processes of different layouts: a's pagemap replaced by b's is another list of runs
  const w = await startWorkload("spin", ["8", "--pattern=heap"]);
  const v = await startWorkload("spin", ["20", "--pattern=random"]);
  const base = imagesDir("incr-warm");
  for (const d of ["a", "b"]) mkdirSync(join(base, d));
  const env = { CRIU_BUN_MEMTRACK: "off" };
  expect(criuBun(["pre-dump", "-t", String(w.pid), "-D", join(base, "a")], { env }).code).toBe(0);
  expect(criuBun(["pre-dump", "-t", String(v.pid), "-D", join(base, "b")], { env }).code).toBe(0);
  const A = join(base, "a"),
    B = join(base, "b");
  // the first page of every stored run of b's process, read through a PageSource of dir as process pid
  const pages = (dir: string, pid: number) => {
    const src = new PageSource(dir, pid);
    try {
      return decodePagemap(B, `pagemap-${v.pid}.img`)
        .runs.filter((r) => r.flags & 4)
        .map((r) => {
          const buf = new Uint8Array(4096);
          return src.read(r.vaddr, buf, 0) ? Buffer.from(buf).toString("base64") : "";
        });
    } finally {
      src.close();
    }
  };
  const fromB = pages(B, v.pid);
  expect(fromB.every((p) => p !== "")).toBe(true);
  warmParentRuns(A); // a's pagemap decoded and kept
  expect(pages(A, w.pid)).not.toEqual(fromB); // the check below can tell a's runs from b's
  // a's images replaced by b's (new files under a's names, as a new round would write them)
  for (const f of readdirSync(B).filter((f) => /^(pagemap-\d+|pages-\d+)\.(img|idx)$/.test(f))) {
    const to = f === `pagemap-${v.pid}.img` ? `pagemap-${w.pid}.img` : f;
    copyFileSync(join(B, f), join(A, `${to}.new`));
    renameSync(join(A, `${to}.new`), join(A, to));
  }
  expect(pages(A, w.pid)).toEqual(fromB);
  for (const x of [w, v]) {
    trigger(x);
    expect((await waitResult(x, 15000)).text).toStartWith("PASS");
  }
});

test("parent pages read through a warm chain (migrate's PRECHECK): a page index replaced since is read as it is now, and a reused block buffer never serves a block it did not just read", async () => {
  const w = await startWorkload("spin", ["8", "--pattern=heap"]);
  const base = imagesDir("incr-warm-idx");
  for (const d of ["a", "b"]) mkdirSync(join(base, d));
  const env = { CRIU_BUN_MEMTRACK: "off" };
  const A = join(base, "a"),
    B = join(base, "b");
  expect(criuBun(["pre-dump", "-t", String(w.pid), "-D", A], { env }).code).toBe(0);
  expect(criuBun(["pre-dump", "-t", String(w.pid), "-D", B], { env }).code).toBe(0);
  const runs = decodePagemap(A, `pagemap-${w.pid}.img`).runs.filter((r) => r.flags & 4);
  // every stored run's first page of dir, read through a fresh PageSource (its block buffer from the pool)
  const pages = (dir: string) => {
    const src = new PageSource(dir, w.pid);
    try {
      return runs.map((r) => {
        const buf = new Uint8Array(4096);
        return src.read(r.vaddr, buf, 0) ? Buffer.from(buf).toString("base64") : "";
      });
    } finally {
      src.close();
    }
  };
  warmParentRuns(A); // decoded, its layout checked and kept, block buffers made and touched
  const good = pages(A);
  expect(good.every((p) => p !== "")).toBe(true);
  // a's page index replaced by one whose first block's checksum differs (same size, a new file):
  // the kept layout is not the file's any more, so the block is checked against the new index and refused
  const idx = readdirSync(A).find((f) => /^pages-\d+\.idx$/.test(f))!;
  copyFileSync(join(A, idx), join(A, `${idx}.new`));
  flipBit(join(A, `${idx}.new`), 32 + 8); // block 0's stored checksum (after the 32-byte header)
  renameSync(join(A, `${idx}.new`), join(A, idx));
  expect(() => pages(A)).toThrow(/checksum|XXH|hash/i);
  // b's pages file damaged in its first block: its PageSource takes a buffer a's blocks were read into
  // (same block size), and must read and check b's block, not find a's bytes there
  const img = readdirSync(B).find((f) => /^pages-\d+\.img$/.test(f))!;
  flipBit(join(B, img), 100);
  expect(() => pages(B)).toThrow(/checksum|XXH|hash/i);
  trigger(w);
  expect((await waitResult(w, 15000)).text).toStartWith("PASS");
});

test("images without a page index (a page server's, as migrate's rounds are) read through reused read-ahead buffers: every page is the file's own, never one a buffer held before", async () => {
  const w = await startWorkload("spin", ["8", "--pattern=heap"]);
  const v = await startWorkload("spin", ["8", "--pattern=random"]);
  const base = imagesDir("incr-ahead");
  const env = { CRIU_BUN_MEMTRACK: "off" };
  const A = join(base, "a"),
    B = join(base, "b");
  for (const d of [A, B]) mkdirSync(d);
  expect(criuBun(["pre-dump", "-t", String(w.pid), "-D", A], { env }).code).toBe(0);
  expect(criuBun(["pre-dump", "-t", String(v.pid), "-D", B], { env }).code).toBe(0);
  // no index: PageSource reads the pages file ahead, as it does a page server's images
  for (const d of [A, B]) for (const f of readdirSync(d).filter((f) => /^pages-\d+\.idx$/.test(f))) rmSync(join(d, f));
  // each stored page of dir as PageSource reads it, against the bytes at its place in the pages file
  const check = (dir: string, pid: number) => {
    const pm = decodePagemap(dir, `pagemap-${pid}.img`);
    const file = readFileSync(join(dir, `pages-${pm.pagesId}.img`));
    const src = new PageSource(dir, pid);
    let off = 0,
      n = 0;
    try {
      for (const r of pm.runs.filter((r) => r.flags & 4)) {
        for (let i = 0; i < r.nrPages; i++, off += 4096) {
          const buf = new Uint8Array(4096);
          expect(src.read(r.vaddr + BigInt(i * 4096), buf, 0)).toBe(true);
          if (Buffer.compare(buf, file.subarray(off, off + 4096)) !== 0) throw new Error(`${dir}: page ${n} differs`);
          n++;
        }
      }
    } finally {
      src.close();
    }
    return n;
  };
  warmParentRuns(A); // read-ahead buffers made and touched ahead
  expect(check(A, w.pid)).toBeGreaterThan(1000);
  // b's PageSource takes the buffer a's pages were just read into (random pages: no page of a's is one of b's)
  expect(check(B, v.pid)).toBeGreaterThan(1000);
  expect(check(A, w.pid)).toBeGreaterThan(1000);
  for (const x of [w, v]) {
    trigger(x);
    expect((await waitResult(x, 15000)).text).toStartWith("PASS");
  }
});

test("parent pages read ahead (migrate's last PRECHECK) are written only while every level of the chain is the same: a level replaced since is read as it is now", async () => {
  const w = await startWorkload("spin", ["8", "--pattern=heap"]);
  const base = imagesDir("incr-pages-ahead");
  const env = { CRIU_BUN_MEMTRACK: "off" };
  const A = join(base, "a"),
    B = join(base, "b"),
    C = join(base, "c");
  for (const d of [A, B, C]) mkdirSync(d);
  expect(criuBun(["pre-dump", "-t", String(w.pid), "-D", A], { env }).code).toBe(0);
  await ranOn(w.pid);
  expect(criuBun(["pre-dump", "-t", String(w.pid), "-D", B, "--prev-images-dir", "../a"], { env }).code).toBe(0);
  // a page server's images, as migrate's rounds are: no page index (read ahead, not block by block)
  for (const d of [A, B]) for (const f of readdirSync(d).filter((f) => /^pages-\d+\.idx$/.test(f))) rmSync(join(d, f));
  symlinkSync("../b", join(C, "parent")); // c: the final round, b its parent, a b's
  // every page b holds (stored in b or, PE_PARENT, in a), as c's PE_PARENT runs
  const bRuns = decodePagemap(B, `pagemap-${w.pid}.img`).runs.filter((r) => r.flags & 5);
  expect(bRuns.some((r) => r.flags & 1)).toBe(true); // some through b to a
  const runs = bRuns.map((r) => ({ ...r, flags: 1 }));
  const log = join(base, "fill.log");
  const shm = mkdtempSync("/dev/shm/criu-bun-test-ahead-");
  shmDirs.push(shm);
  const lvl = logLevel();
  // c's PE_PARENT pages written into a file at their addresses, then read back; and what the fill logged
  const fill = (tag: string) => {
    // (tmpfs: a file as large as an address space, holes but for these pages)
    const out = join(shm, `mem-${tag}`);
    writeFileSync(log, "");
    setLogLevel(4);
    setLogFile(log);
    const fd = openSync(out, "w+");
    try {
      fillParentPages(C, w.pid, runs, fd, "test");
      const got = runs.map((r) => {
        const b = Buffer.alloc(r.nrPages * 4096);
        expect(readSync(fd, b, 0, b.length, Number(r.vaddr))).toBe(b.length);
        return b;
      });
      return { bytes: Buffer.concat(got), log: readFileSync(log, "utf8") };
    } finally {
      closeSync(fd);
      setLogFile(undefined);
      setLogLevel(lvl);
      rmSync(out);
    }
  };
  const ref = fill("ref"); // nothing read ahead: the chain read
  expect(ref.log).not.toContain("(read ahead)");
  warmParentPages(B, [{ pid: w.pid, runs }]);
  const ahead = fill("ahead");
  expect(ahead.log).toContain(
    `test: ${runs.reduce((n, r) => n + r.nrPages, 0)} pages taken from the parent images (read ahead)`
  );
  expect(Buffer.compare(ahead.bytes, ref.bytes)).toBe(0);
  // a's pages file replaced (a new file, as a new round would write it) by one with a page of b's PE_PARENT runs changed
  const pm = decodePagemap(A, `pagemap-${w.pid}.img`);
  const viaA = bRuns.find((r) => r.flags & 1)!;
  let off = 0;
  for (const r of pm.runs.filter((r) => r.flags & 4)) {
    if (viaA.vaddr >= r.vaddr && viaA.vaddr < r.vaddr + BigInt(r.nrPages * 4096)) {
      off += Number(viaA.vaddr - r.vaddr);
      break;
    }
    off += r.nrPages * 4096;
  }
  const img = join(A, `pages-${pm.pagesId}.img`);
  const data = readFileSync(img);
  for (let i = 0; i < 4096; i++) data[off + i] ^= 0x5a;
  writeFileSync(`${img}.new`, data);
  renameSync(`${img}.new`, img);
  const now = fill("now");
  expect(now.log).not.toContain("(read ahead)");
  expect(now.log).toContain("changed since their pages were read ahead");
  expect(Buffer.compare(now.bytes, ref.bytes)).not.toBe(0);
  // exactly that page differs, as a's file now has it
  let at = 0;
  for (const r of runs) {
    if (r.vaddr === viaA.vaddr) break;
    at += r.nrPages * 4096;
  }
  expect(Buffer.compare(now.bytes.subarray(at, at + 4096), data.subarray(off, off + 4096))).toBe(0);
  expect(Buffer.compare(now.bytes.subarray(0, at), ref.bytes.subarray(0, at))).toBe(0);
  // a page asked for that was not read ahead: the chain is read (the same bytes as now)
  warmParentPages(B, [{ pid: w.pid, runs: runs.slice(1) }]);
  const part = fill("part");
  expect(part.log).toContain("was not read ahead");
  expect(Buffer.compare(part.bytes, now.bytes)).toBe(0);
  warmParentPages(B, []); // nothing kept for the other tests
  trigger(w);
  expect((await waitResult(w, 15000)).text).toStartWith("PASS");
});
