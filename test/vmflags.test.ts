// VmFlags from the BPF task_vma iterator (src/sys/bpfvma.ts, vmflags.ts) against smaps: the same
// workload dumped with each source gives the very same VMAs (decoded by crit, CRIU's own tool), the
// refusals that hang on VmFlags (droppable, hugetlb) still happen through the iterator, and a wrong
// bit table is caught by the calibration before any freeze (smaps then, the image still right).
import { afterAll, beforeAll, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildWorkloads, cleanup, startWorkload, trigger, waitResult, isAlive, criuBun } from "./harness";
import { imagesDir, cleanupImages, killAndWait, restore } from "./engine-helpers";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
afterAll(() => {
  cleanup();
  cleanupImages();
});

const BPF = /VmFlags from a BPF task_vma iterator for this run/;

/** dump -R of pid with CRIU_BUN_VMFLAGS=source (and more env): the -v4 log and the decoded mm image's VMAs */
function dumpWith(pid: number, tag: string, env: Record<string, string>) {
  const dir = imagesDir(tag);
  const r = criuBun(["dump", "-t", String(pid), "-D", dir, "-o", "dump.log", "-v4", "-R"], { env });
  const log = readFileSync(join(dir, "dump.log"), "utf8");
  if (r.code !== 0) throw new Error(`dump failed (${r.code}): ${r.stderr}\n${log}`);
  const c = Bun.spawnSync(["crit", "decode", "-i", join(dir, `mm-${pid}.img`)]);
  if (c.exitCode !== 0) throw new Error(`crit decode: ${c.stderr.toString()}`);
  const vmas = JSON.parse(c.stdout.toString()).entries[0].vmas as Record<string, string | number>[];
  return { dir, log, vmas };
}

/** The BPF source is usable here (root, BPF, BTF): else the tests below only check the fallback. */
function bpfHere(log: string): boolean {
  if (BPF.test(log)) return true;
  expect(log).toMatch(/VmFlags from smaps for this run: /);
  console.log(`no BPF VmFlags here: ${/VmFlags from smaps for this run: (.*)/.exec(log)?.[1]}`);
  return false;
}

test("a process with every VmFlags a dump reads (dc dd mg hg nh wf sr rr, lo, gd, mw): the BPF iterator's images equal smaps's (crit decode), and the restore from them keeps every flag", async () => {
  const w = await startWorkload("exact", ["vmflags"], { stderr: "file" });
  const a = dumpWith(w.pid, "vmflags-bpf", { CRIU_BUN_VMFLAGS: "bpf" });
  const b = dumpWith(w.pid, "vmflags-smaps", { CRIU_BUN_VMFLAGS: "smaps" });
  expect(b.log).toMatch(new RegExp(`process ${w.pid}: \\d+ VMAs read from smaps`));
  expect(b.log).not.toMatch(BPF);
  if (bpfHere(a.log)) {
    expect(a.log).toMatch(new RegExp(`process ${w.pid}: \\d+ VMAs read from maps, their flags from the BPF iterator`));
    expect(a.log).not.toMatch(new RegExp(`process ${w.pid}: \\d+ VMAs read from smaps`));
  }
  // every field of every VMA (start, end, prot, flags, status, madv, fdflags ...) the same
  expect(a.vmas).toEqual(b.vmas);
  // and the flags are there at all: the workload's eleven advised, locked and growsdown mappings
  const madv = a.vmas.filter((v) => v.madv !== undefined && v.madv !== "0x0");
  expect(madv.length).toBeGreaterThanOrEqual(9);
  expect(a.vmas.some((v) => String(v.flags).includes("MAP_LOCKED") || (Number(v.flags) & 0x2000) !== 0)).toBe(true);
  expect(
    a.vmas.filter((v) => String(v.flags).includes("MAP_GROWSDOWN") || (Number(v.flags) & 0x100) !== 0).length
  ).toBeGreaterThanOrEqual(2);
  // restored from the iterator's images, the workload finds each flag (its own smaps) and its memory
  await killAndWait(w);
  const r = await restore(a.dir, w.pid);
  trigger(w);
  expect((await waitResult(w, 15_000)).text).toStartWith("PASS");
  expect(await r.proc.exited).toBe(0);
}, 90_000);

test("a wrong bit table (dc and dd exchanged by CRIU_BUN_VMFLAGS_SWAP) is refused by the calibration before the freeze: smaps is used, the image is right", async () => {
  const w = await startWorkload("exact", ["vmflags"], { stderr: "file" });
  const a = dumpWith(w.pid, "vmflags-swap", { CRIU_BUN_VMFLAGS: "bpf", CRIU_BUN_VMFLAGS_SWAP: "dc,dd" });
  const b = dumpWith(w.pid, "vmflags-swap-smaps", { CRIU_BUN_VMFLAGS: "smaps" });
  expect(a.log).not.toMatch(BPF);
  expect(a.log).toMatch(/VmFlags from smaps for this run: /);
  const checked =
    /VmFlags from smaps for this run: calibration: VMA 0x[0-9a-f]+ has VmFlags "([a-z ]*)" in smaps but "([a-z ]*)"/.exec(
      a.log
    );
  if (checked) {
    // the mismatch named: one side has dc where the other has dd
    expect(checked[1].split(" ").includes("dc") !== checked[2].split(" ").includes("dc")).toBe(true);
  } else expect(bpfHere(a.log)).toBe(false); // no BPF here at all
  // the calibration ran before anything was frozen, and the dump's VMAs come from smaps
  expect(a.log.indexOf("VmFlags from smaps for this run")).toBeLessThan(a.log.indexOf("freezing the tree"));
  expect(a.log).toMatch(new RegExp(`process ${w.pid}: \\d+ VMAs read from smaps`));
  expect(a.vmas).toEqual(b.vmas);
  trigger(w);
  expect((await waitResult(w, 15_000)).text).toStartWith("PASS");
}, 60_000);

for (const key of ["droppable", "hugetlb"] as const) {
  test(`refused through the iterator's flags: ${key} (${key === "droppable" ? "dp, its bit learnt by the calibration" : "ht"}); the target runs on`, async () => {
    const hp = "/proc/sys/vm/nr_hugepages";
    const hpWas = key === "hugetlb" ? readFileSync(hp, "utf8").trim() : undefined;
    if (hpWas === "0") writeFileSync(hp, "2");
    try {
      const w = await startWorkload("refuse", [key], { stderr: "file" });
      const dir = imagesDir(`vmflags-refuse-${key}`);
      const r = criuBun(["dump", "-t", String(w.pid), "-D", dir, "-o", "dump.log", "-v4"], {
        env: { CRIU_BUN_VMFLAGS: "bpf" },
      });
      const log = readFileSync(join(dir, "dump.log"), "utf8");
      expect(r.code).toBe(1);
      // (with -o the error line goes to the log)
      expect(log).toMatch(new RegExp(`Error \\(\\w+\\): process ${w.pid}: .*${key}.* is not supported yet$`, "im"));
      if (bpfHere(log))
        expect(log).toMatch(
          new RegExp(`process ${w.pid}: \\d+ VMAs read from maps, their flags from the BPF iterator`)
        );
      expect(isAlive(w.pid)).toBe(true);
      trigger(w);
      expect((await waitResult(w, 15_000)).text).toStartWith("PASS");
    } finally {
      if (hpWas === "0") writeFileSync(hp, "0");
    }
  }, 60_000);
}
