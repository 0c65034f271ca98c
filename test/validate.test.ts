// Damaged or incomplete images are refused before anything is created, with one line naming the
// file, and nothing is left behind: each workload is dumped once, then copies of its images are
// damaged the way a bad disk, a careless copy or a hostile hand would (src/restore/validate.ts).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  closeSync,
  cpSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import {
  buildWorkloads,
  cleanup,
  startWorkload,
  trigger,
  waitResult,
  criuBun,
  isAlive,
  type Workload,
} from "./harness";
import { dump, imagesDir, cleanupImages, restore, waitReaped } from "./engine-helpers";
import { readImage, encodeImage, writeImageBytes } from "../src/images/image";
import { writeManifest, verifyManifest } from "../src/images/manifest";
import { decodePagemap, encodePagemap } from "../src/images/pagemap";
import * as S from "../src/images/schemas";
import type { MessageKind } from "../src/images/magic";

const dumped = new Map<string, { w: Workload; dir: string }>();
const copies: string[] = [];

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
afterAll(() => {
  cleanup();
  cleanupImages();
  for (const d of copies) rmSync(d, { recursive: true, force: true });
});

/** The workload dumped once (killed by the dump), its images kept as the pristine copy. */
async function pristine(name: string) {
  let d = dumped.get(name);
  if (!d) {
    const w = await startWorkload(name);
    const dir = imagesDir(`val-${name}`);
    dump(w.pid, dir);
    await waitReaped(w.pid);
    d = { w, dir };
    dumped.set(name, d);
  }
  return d;
}

function copyOf(dir: string): string {
  const c = mkdtempSync(join(tmpdir(), "criu-bun-val-"));
  copies.push(c);
  cpSync(dir, c, { recursive: true });
  return c;
}

const file = (dir: string, prefix: string) => readdirSync(dir).find((f) => f.startsWith(prefix))!;

/** Restore must fail quickly with exactly one error line containing `want`, leaving no process. */
function refused(dir: string, w: Workload, ...want: string[]) {
  const t0 = Date.now();
  const r = criuBun(["restore", "-d", "-D", dir], { timeoutMs: 30_000 });
  const errs = r.stderr.split("\n").filter((l) => l.trim());
  expect(r.code).not.toBe(0);
  expect(errs.length).toBe(1);
  expect(errs[0]).toStartWith("Error (");
  for (const s of want) expect(errs[0]).toContain(s);
  expect(Date.now() - t0).toBeLessThan(15_000);
  expect(isAlive(w.pid)).toBe(false);
  return errs[0];
}

function rewritePagemap(dir: string, edit: (runs: { vaddr: bigint; nrPages: number; flags: number }[]) => void) {
  const f = file(dir, "pagemap-");
  const pm = decodePagemap(dir, f);
  edit(pm.runs);
  writeFileSync(join(dir, f), encodePagemap(pm.pagesId, pm.runs));
  return f;
}

function rewrite<T>(dir: string, f: string, kind: string, edit: (entries: T[]) => void) {
  const e = readImage(dir, f, kind as MessageKind);
  edit(e as unknown as T[]);
  writeFileSync(join(dir, f), encodeImage(kind, e));
}

describe("fields that would make restore loop or write elsewhere", () => {
  test("a pagemap address off by 16 bytes: refused at once naming the entry (restore used to spin, growing to 9 GB)", async () => {
    const { w, dir } = await pristine("counter");
    const c = copyOf(dir);
    // the last run of a VMA: an unaligned start there left restore no whole page to take, forever
    const f = rewritePagemap(c, (runs) => {
      runs[runs.length - 1].vaddr += 16n;
    });
    const line = refused(c, w, f, "not page aligned");
    expect(line).toContain(`entry `);
  });

  test("a pagemap run reaching past the end of user space, and two runs out of order: each refused naming the entry", async () => {
    const { w, dir } = await pristine("counter");
    const c1 = copyOf(dir);
    // page aligned, above 2^53 (the check's doubles are exact there), its pages past TASK_SIZE_MAX
    const f = rewritePagemap(c1, (runs) => {
      runs[runs.length - 1].vaddr = 0x00fffffffff00000n;
      runs[runs.length - 1].nrPages = 0x200;
    });
    expect(refused(c1, w, f, "beyond user space")).toContain(`entry `);
    const c2 = copyOf(dir);
    const f2 = rewritePagemap(c2, (runs) => {
      [runs[0], runs[1]] = [runs[1], runs[0]];
    });
    expect(refused(c2, w, f2, "entries must be sorted")).toContain("entry 1 ");
  });

  test("a VMA end off by 16 bytes: refused naming the mm image", async () => {
    const { w, dir } = await pristine("counter");
    const c = copyOf(dir);
    const f = file(c, "mm-");
    rewrite<S.mm_entry>(c, f, "MM", ([mm]) => {
      mm.vmas[2].end += 16n;
    });
    refused(c, w, f, "VMA 2", "not page aligned");
  });

  test("overlapping VMAs and a pagemap run outside every VMA are refused", async () => {
    const { w, dir } = await pristine("counter");
    const c1 = copyOf(dir),
      f = file(c1, "mm-");
    rewrite<S.mm_entry>(c1, f, "MM", ([mm]) => {
      mm.vmas[3].start = mm.vmas[2].start;
    });
    refused(c1, w, f, "VMA 3", "overlaps");
    const c2 = copyOf(dir);
    rewrite<S.mm_entry>(c2, file(c2, "mm-"), "MM", ([mm]) => {
      const pm = decodePagemap(c2, file(c2, "pagemap-"));
      // drop the VMA that holds the first run of pages
      mm.vmas = mm.vmas.filter((v) => !(v.start <= pm.runs[0].vaddr && pm.runs[0].vaddr < v.end));
    });
    refused(c2, w, file(c2, "pagemap-"), "outside every VMA");
  });

  test("pstree with PID 0, a loop of parents, a TID listed twice", async () => {
    const { w, dir } = await pristine("counter");
    const c1 = copyOf(dir);
    rewrite<S.pstree_entry>(c1, "pstree.img", "PSTREE", (p) => {
      p[0].pid = 0;
    });
    refused(c1, w, "pstree.img", "PID 0");
    const c2 = copyOf(dir);
    rewrite<S.pstree_entry>(c2, "pstree.img", "PSTREE", (p) => {
      p.push(create(S.pstree_entrySchema, { ...p[0], ppid: p[0].pid + 1 }));
      p[1].pid = p[0].pid + 1;
      p[1].threads = [p[1].pid];
    });
    refused(c2, w, "pstree.img");
    const c3 = copyOf(dir);
    rewrite<S.pstree_entry>(c3, "pstree.img", "PSTREE", (p) => {
      p[0].threads = [p[0].pid, p[0].pid];
    });
    refused(c3, w, "pstree.img", "listed twice");
  });
});

describe("missing or inconsistent images", () => {
  test("pagemap entries reordered: refused, both as unsorted and as moved (the page index binds blocks to addresses)", async () => {
    const { w, dir } = await pristine("counter");
    const c1 = copyOf(dir);
    const f = rewritePagemap(c1, (runs) => {
      const t = runs[1];
      runs[1] = runs[2];
      runs[2] = t;
    });
    refused(c1, w, f, "sorted");
    // still sorted and inside the same VMAs, but the bytes would land one page lower
    const c2 = copyOf(dir);
    let moved = false;
    const [mm] = readImage(c2, file(c2, "mm-"), "MM");
    rewritePagemap(c2, (runs) => {
      for (let i = 1; i < runs.length && !moved; i++) {
        const prevEnd = runs[i - 1].vaddr + BigInt(runs[i - 1].nrPages) * 4096n,
          to = runs[i].vaddr - 4096n;
        if (to > prevEnd && mm.vmas.some((v) => v.start <= to && runs[i].vaddr < v.end)) {
          runs[i].vaddr = to;
          moved = true;
        }
      }
    });
    expect(moved).toBe(true);
    refused(c2, w, f, "pages-1.idx", "other addresses");
  });

  test("no fdinfo image (a process without fds), no ids image: refused naming the file", async () => {
    const { w, dir } = await pristine("counter");
    const c1 = copyOf(dir),
      fdinfo = file(c1, "fdinfo-");
    unlinkSync(join(c1, fdinfo));
    refused(c1, w, `${fdinfo} is missing`);
    const c2 = copyOf(dir);
    unlinkSync(join(c2, file(c2, "ids-")));
    refused(c2, w, "ids-", "is missing");
  });

  test("no pipes-data image (unread data lost): refused; the pristine images restore and the data is there", async () => {
    const { w, dir } = await pristine("pipes");
    const c = copyOf(dir);
    unlinkSync(join(c, "pipes-data.img"));
    refused(c, w, "pipes-data.img is missing");
    const r = await restore(dir, w.pid);
    trigger(w);
    expect((await waitResult(w, 15_000)).text).toStartWith("PASS");
    expect(await r.proc.exited).toBe(0);
  });

  test("an fd whose type differs from its file's, an fd listed twice: refused", async () => {
    const { w, dir } = await pristine("counter");
    const c1 = copyOf(dir),
      fdinfo = file(c1, "fdinfo-");
    rewrite<S.fdinfo_entry>(c1, fdinfo, "FDINFO", (fds) => {
      fds[0].type = 2;
    });
    refused(c1, w, fdinfo, "type");
    const c2 = copyOf(dir);
    rewrite<S.fdinfo_entry>(c2, fdinfo, "FDINFO", (fds) => {
      fds[1].fd = fds[0].fd;
    });
    refused(c2, w, fdinfo, "listed twice");
  });
});

describe("unexpected errors", () => {
  test("a bug in the middle of restore: one line naming phase and process, stack only in the -v4 log, nothing left, images still good", async () => {
    const { w, dir } = await pristine("counter");
    const line = `Error (restore): internal error in restoring files for process ${w.pid}: injected bug 'restore-files' (CRIU_BUN_FAULT)`;
    const r = criuBun(["restore", "-d", "-D", dir], { env: { CRIU_BUN_FAULT: "restore-files:internal" } });
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split("\n")).toEqual([line]);
    expect(isAlive(w.pid)).toBe(false);
    // at -v4 the log has the stack too
    const r4 = criuBun(["restore", "-d", "-D", dir, "-o", "bug.log", "-v4"], {
      env: { CRIU_BUN_FAULT: "restore-files:internal" },
    });
    expect(r4.code).not.toBe(0);
    const logText = readFileSync(join(dir, "bug.log"), "utf8");
    expect(logText).toContain(line);
    expect(logText).toContain("stack of the internal error:");
    expect(logText).toMatch(/TypeError: injected bug/);
    expect(isAlive(w.pid)).toBe(false);
    const rr = await restore(dir, w.pid);
    trigger(w);
    expect((await waitResult(w, 15_000)).text).toStartWith("PASS");
    expect(await rr.proc.exited).toBe(0);
  });
});

describe("--timeout", () => {
  test("a restore that stops making progress ends within --timeout with one line, leaving no process", async () => {
    const { w, dir } = await pristine("counter");
    const t0 = Date.now();
    const r = criuBun(["restore", "-d", "-D", dir, "--timeout", "2"], {
      env: { CRIU_BUN_FAULT: "restore-files:hang" },
      timeoutMs: 30_000,
    });
    const ms = Date.now() - t0;
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split("\n")).toEqual([
      `Error (restore): no progress for 2 s in restoring files for process ${w.pid} (--timeout); stopped, nothing restored`,
    ]);
    expect(ms).toBeLessThan(10_000);
    const deadline = Date.now() + 5000;
    while (isAlive(w.pid) && Date.now() < deadline) await Bun.sleep(20);
    expect(isAlive(w.pid)).toBe(false);
  });
});

describe("criu-bun.sum", () => {
  test("a plausible but changed value (another instruction pointer) is refused by the images' checksums, naming the file", async () => {
    const { w, dir } = await pristine("counter");
    const c = copyOf(dir);
    const f = `core-${w.pid}.img`;
    rewrite<S.core_entry>(c, f, "CORE", ([core]) => {
      core.threadInfo!.gpregs!.ip += 1n;
    });
    refused(c, w, f, "is damaged", "criu-bun.sum");
    // and without it, a dump that says criu-bun wrote it is refused too
    const c2 = copyOf(dir);
    unlinkSync(join(c2, "criu-bun.sum"));
    refused(c2, w, "criu-bun.sum is missing");
  });

  test("the checksums of images written by this process come from the bytes written; one changed since is read again", () => {
    const d = mkdtempSync(join(tmpdir(), "criu-bun-sum-"));
    try {
      const a = new Uint8Array(300_000).map((_, i) => (i * 7) & 0xff),
        b = new Uint8Array(5000).fill(3),
        c = new Uint8Array(5000).fill(4);
      writeImageBytes(d, "a.img", a);
      writeImageBytes(d, "b.img", b);
      writeImageBytes(d, "c.img", c);
      // b.img replaced by other bytes of the same size, c.img written in place: both must be read again
      writeFileSync(join(d, "b.img"), new Uint8Array(5000).fill(9));
      const fd = openSync(join(d, "c.img"), "r+");
      writeSync(fd, new Uint8Array([1]), 0, 1, 100);
      closeSync(fd);
      writeManifest(d);
      const want = ["a.img", "b.img", "c.img"]
        .map(
          (f) =>
            `${Bun.hash
              .xxHash64(readFileSync(join(d, f)))
              .toString(16)
              .padStart(16, "0")}  ${f}\n`
        )
        .join("");
      expect(readFileSync(join(d, "criu-bun.sum"), "latin1")).toBe(want);
      expect(() => verifyManifest(d)).not.toThrow();
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});
