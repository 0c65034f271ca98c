// criu's dedup for a chain of incremental images (pre-dump, then dump --prev-images-dir):
// `dump --auto-dedup` and `criu-bun dedup -D` punch the pages a dump stores itself out of its
// parents, `restore --auto-dedup` punches what it restores. The workload (spin, 32 MiB of heap)
// checks the hash of its memory after every restore; the parents' allocated bytes are measured
// (st_blocks). Images a dedup took pages from are refused as the newest of a restore; CRIU 4.2
// restores criu-bun's deduplicated chain, and criu-bun repairs the page index CRIU's own dedup
// leaves stale.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import {
  buildWorkloads,
  cleanup,
  startWorkload,
  trigger,
  waitResult,
  criuBun,
  killWorkload,
  type Workload,
} from "./harness";
import { imagesDir, cleanupImages, restore, waitReaped, peer, havePeer } from "./engine-helpers";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
afterAll(() => {
  cleanup();
  cleanupImages();
});

/** bytes of a directory's pages files the filesystem holds (holes not counted) */
const allocated = (d: string) =>
  readdirSync(d)
    .filter((f) => /^pages-\d+\.img$/.test(f))
    .reduce((s, f) => s + statSync(join(d, f)).blocks * 512, 0);
const pagesBytes = (d: string) =>
  readdirSync(d)
    .filter((f) => /^pages-\d+\.img$/.test(f))
    .reduce((s, f) => s + statSync(join(d, f)).size, 0);

function ok(args: string[]) {
  const r = criuBun(args);
  if (r.code !== 0) throw new Error(`criu-bun ${args.join(" ")}: ${r.code}\n${r.stderr}`);
  return r;
}

/** spin with 32 MiB of heap, pre-dumped into pre1, then dumped into final on top of it (extra: dump options) */
async function chain(tag: string, extra: string[] = []) {
  const w = await startWorkload("spin", ["32", "--pattern=heap"]);
  const base = imagesDir(tag);
  const pre1 = join(base, "pre1"),
    final = join(base, "final");
  mkdirSync(pre1);
  mkdirSync(final);
  ok(["pre-dump", "-t", String(w.pid), "-D", pre1, "--track-mem"]);
  const before = allocated(pre1);
  expect(before).toBeGreaterThan(20 << 20);
  ok([
    "dump",
    "-t",
    String(w.pid),
    "-D",
    final,
    "--prev-images-dir",
    "../pre1",
    "--track-mem",
    "-v4",
    "-o",
    "dump.log",
    ...extra,
  ]);
  await waitReaped(w.pid);
  return { w, pre1, final, before };
}

async function expectPass(w: Workload) {
  trigger(w);
  expect((await waitResult(w, 15000)).text).toStartWith("PASS"); // the hash of its memory
}

/** the images a dedup took pages from: refused as the newest of a restore, in one line, nothing made */
function refusedAlone(dir: string, pid: number) {
  expect(existsSync(join(dir, "criu-bun.dedup"))).toBe(true);
  const r = criuBun(["restore", "-d", "-D", dir]);
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(
    /^Error \(restore\): .*: pages were punched out of these images \(.*\): restore the newest images of their chain\n$/
  );
  expect(existsSync(`/proc/${pid}`)).toBe(false);
}

test("dump --auto-dedup: the pages the dump stores itself leave its parent (exactly those bytes); the parent alone is refused; the dump restores through it, with criu-bun and with CRIU 4.2", async () => {
  const { w, pre1, final, before } = await chain("autodedup", ["--auto-dedup"]);
  const m = /dedup: \S+: \d+ range\(s\), (\d+) bytes punched/.exec(readFileSync(join(final, "dump.log"), "utf8"));
  expect(m).not.toBeNull();
  const punched = Number(m![1]);
  expect(punched).toBeGreaterThan(0); // the pages spin wrote since the pre-dump: its counter, its stack
  expect(punched).toBeLessThanOrEqual(pagesBytes(final));
  expect(before - allocated(pre1)).toBe(punched);
  refusedAlone(pre1, w.pid);
  const rr = await restore(final, w.pid);
  await expectPass(w);
  expect(await rr.proc.exited).toBe(0);
  if (havePeer) {
    // the same chain through CRIU 4.2 (it reads the parents' pages where criu-bun left them)
    await waitReaped(w.pid);
    for (const f of ["result", "go"]) rmSync(join(w.dir, f), { force: true });
    peer(["restore", "-d"], final, "peer-restore.log");
    try {
      await expectPass(w);
    } finally {
      killWorkload(w);
    }
  }
});

test("criu-bun dedup -D: the same for a chain dumped without it, twice changes nothing more; CRIU 4.2's dedup of criu-bun's chain leaves its page index stale: restore says so in one line, and criu-bun dedup brings it up to date", async () => {
  const { w, pre1, final, before } = await chain("dedup");
  expect(allocated(pre1)).toBe(before);
  if (havePeer) {
    peer(["dedup"], final, "peer-dedup.log");
    const afterPeer = allocated(pre1);
    expect(afterPeer).toBeLessThan(before);
    const r = criuBun(["restore", "-d", "-D", final]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^Error \(restore\): .*pre1: parent pages block at file offset \d+: checksum mismatch; pages were punched out of it by a dedup that did not update its page index \(`criu-bun dedup -D` of the newest images brings it up to date\)\n$/
    );
    expect(existsSync(`/proc/${w.pid}`)).toBe(false);
  }
  ok(["dedup", "-D", final]);
  const after = allocated(pre1);
  expect(after).toBeLessThan(before);
  expect(before - after).toBeLessThanOrEqual(pagesBytes(final));
  ok(["dedup", "-D", final]);
  expect(allocated(pre1)).toBe(after);
  refusedAlone(pre1, w.pid);
  const rr = await restore(final, w.pid);
  await expectPass(w);
  expect(await rr.proc.exited).toBe(0);
  // no parent: nothing to do, said so
  const lone = imagesDir("dedup-lone");
  expect(ok(["dedup", "-D", lone, "-v4"]).stderr).toContain("has no parent images; nothing to punch");
});

test("restore --auto-dedup: the newest images' pages and those read from the parent leave the files as they are restored; the process checks out; the used-up images are refused after", async () => {
  const { w, pre1, final } = await chain("rstdedup");
  const rr = await restore(final, w.pid, ["--auto-dedup"]);
  expect(allocated(final)).toBe(0);
  // every page the restore read from the parent is gone from it; what it did not read stays
  expect(allocated(pre1)).toBeLessThanOrEqual(pagesBytes(final));
  expect(readFileSync(join(final, "restore.log"), "utf8")).toMatch(
    /--auto-dedup: \d+\.\d MiB punched out of the parent images/
  );
  await expectPass(w);
  expect(await rr.proc.exited).toBe(0);
  refusedAlone(final, w.pid);
  refusedAlone(pre1, w.pid);
});
