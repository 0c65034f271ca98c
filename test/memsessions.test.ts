// States a dump or restore used to lose or change silently (test/workloads/memsess.c MODE), also
// between criu-bun and CRIU 4.2 both ways: MAP_NORESERVE (smaps "nr", vma_entry.flags 0x4000),
// CRIU 4.2's shared anonymous memory (written as a memfd mapping of "/dev/zero"), a process in the
// session of a zombie leader that is not its parent's (made by that leader, handed to its parent by
// the leader's exit), and the personality (CRIU 4.2 writes its hex digits read as a decimal number).
// What cannot be made exactly is refused in one line: a session whose leader lives on (at dump, and
// at restore of CRIU's images, before anything is made), a personality with bits Linux does not define.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildWorkloads, cleanup, criuBun, isAlive, startWorkload } from "./harness";
import {
  cleanupImages,
  expectPass,
  imagesDir,
  waitReaped,
  peer,
  havePeer,
  roundTrip,
  treeOf,
  type Tool,
} from "./engine-helpers";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
const leftovers: number[] = [];
afterAll(() => {
  for (const p of leftovers)
    try {
      process.kill(p, "SIGKILL");
    } catch {}
  cleanup();
  cleanupImages();
});

const BUN = "criu-bun",
  CRIU = "criu-4.2";

/** memsess MODE dumped by one tool, restored by the other (or the same): PASS; the images directory */
async function memsess(mode: string, dumper: Tool, restorer: Tool) {
  const w = await startWorkload("memsess", [mode], { stderr: "file" });
  return roundTrip(w, { dumper, restorer, tag: `memsess-${dumper}-${mode}` });
}

/** [mode, dumper, restorer, title, what the dump's or the restore's log says] */
type Case = [string, Tool, Tool, string, ["dump.log" | "restore.log", RegExp][]];
function roundTrips(cases: Case[]) {
  for (const [mode, dumper, restorer, title, logged] of cases)
    test(`${mode}: ${title}`, async () => {
      const dir = await memsess(mode, dumper, restorer);
      for (const [log, what] of logged) expect(readFileSync(join(dir, log), "utf8")).toMatch(what);
    }, 60_000);
}

/** memsess MODE dumped by CRIU 4.2, its tree gone: the workload, the tree's pids, the images directory */
async function criuDumped(mode: string, tag: string) {
  const w = await startWorkload("memsess", [mode], { stderr: "file" });
  const pids = treeOf(w.pid);
  const dir = imagesDir(tag);
  peer(["dump", "-t", String(w.pid)], dir, "dump.log");
  for (const p of pids) await waitReaped(p, 10_000);
  return { w, pids, dir };
}

/** A restore refused in one line naming `what`, before anything was made: no pid of the tree back. */
function refusedAtRestore(dir: string, pids: number[], what: RegExp) {
  const r = criuBun(["restore", "-D", dir, "-d"]);
  expect(r.code).toBe(1);
  const lines = r.stderr.trim().split("\n");
  expect(lines.length).toBe(1);
  expect(lines[0]).toMatch(what);
  for (const p of pids) expect(existsSync(`/proc/${p}`)).toBe(false);
}

describe("restored exactly (criu-bun dumps and restores)", () => {
  roundTrips([
    [
      "noreserve",
      BUN,
      BUN,
      "a 64 GiB MAP_NORESERVE reservation (dumped with flags 0x4000) can be made writable after restore",
      // PROT_NONE reservation: MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE, as CRIU writes it
      [
        ["dump.log", / --- flags 0x4022 /],
        ["restore.log", /mapped vma \S+ --- flags 0x4022 /],
      ],
    ],
    ["shanon", BUN, BUN, "shared anonymous and /dev/zero memory shared with a child", []],
    [
      "zlead",
      BUN,
      BUN,
      "a process in its zombie leader's session, handed to the subreaper root, stays in that session and group",
      [
        ["restore.log", /made by \d+, the zombie leader of its session \d+, whose exit hands it to its parent \d+/],
        ["restore.log", /its parent is \d+ again, in session \d+/],
      ],
    ],
    [
      "pgrporphan",
      BUN,
      BUN,
      "a process group whose leader exited, its members handed to the subreaper root, is made again (a helper leads it while they join)",
      [["restore.log", /process group \d+: its helper led it while its members joined, and was reaped by process \d+/]],
    ],
    ["pers", BUN, BUN, "personality 0x1060000", []],
  ]);
});

describe.skipIf(!havePeer)("with CRIU 4.2", () => {
  roundTrips([
    ["noreserve", CRIU, BUN, "CRIU 4.2 dumps (flags 0x4000), criu-bun restores the reservation unaccounted", []],
    ["noreserve", BUN, CRIU, "criu-bun dumps a 64 GiB MAP_NORESERVE reservation, CRIU 4.2 restores it", []],
    [
      "shanon",
      CRIU,
      BUN,
      "CRIU 4.2 dumps MAP_SHARED anonymous and /dev/zero memory of a parent and child, criu-bun restores both shared",
      [],
    ],
    ["zlead", CRIU, BUN, "CRIU 4.2 dumps a process in its zombie leader's session, criu-bun restores it there", []],
    ["pgrporphan", CRIU, BUN, "CRIU 4.2 dumps a process group whose leader exited, criu-bun makes it again", []],
    ["pgrporphan", BUN, CRIU, "criu-bun dumps a process group whose leader exited, CRIU 4.2 restores it", []],
    [
      "pers",
      CRIU,
      BUN,
      "CRIU 4.2 writes 0x1060000 as 1060000; criu-bun restores 0x1060000",
      [["restore.log", /personality 1060000 \(CRIU's decimal reading of its hex digits\) is 0x1060000/]],
    ],
  ]);

  test("shared: CRIU 4.2 dumps shared anonymous memory (as a memfd mapping of /dev/zero), criu-bun restores it shared", async () => {
    // (in an IPC namespace of its own: CRIU dumps a SysV segment only with its namespace)
    const w = await startWorkload("shared", [], { stderr: "file", wrap: ["unshare", "--ipc", "--"] });
    const dir = await roundTrip(w, { dumper: CRIU, restorer: BUN, tag: "memsess-peer-shared" });
    expect(readFileSync(join(dir, "restore.log"), "utf8")).toMatch(
      /is shared anonymous memory: read as VMA_ANON_SHARED shmid \d+/
    );
  }, 60_000);

  test("zleadalive: CRIU 4.2's images of a process in a live leader's session other than its parent's are refused in one line before anything is made", async () => {
    const { w, pids, dir } = await criuDumped("zleadalive", "memsess-peer-zleadalive");
    const b = Number(readFileSync(join(w.dir, "culprit"), "utf8"));
    refusedAtRestore(
      dir,
      pids,
      new RegExp(
        `^Error \\(restore\\): process ${b}: session \\d+, which its parent ${w.pid} is not in, is led by process \\d+, which is alive: it cannot be made in that session$`
      )
    );
  }, 60_000);

  test("pers: a personality in CRIU's images that is no reading of one Linux defines is refused in one line before anything is made", async () => {
    const { w, pids, dir } = await criuDumped("pers", "memsess-peer-persbad");
    // 1234567: the digits 0x01234567, bits 0x234567 no personality has
    const core = join(dir, `core-${w.pid}.img`);
    const dec = criuBun(["show", "decode", "-i", core]);
    expect(dec.code).toBe(0);
    expect(dec.stdout).toContain('"personality": 1060000');
    writeFileSync(join(dir, "core.json"), dec.stdout.replace('"personality": 1060000', '"personality": 1234567'));
    expect(criuBun(["show", "encode", "-i", join(dir, "core.json"), "-o", core]).code).toBe(0);
    refusedAtRestore(
      dir,
      pids,
      new RegExp(
        `^Error \\(restore\\): .*core-${w.pid}\\.img: personality 1234567 is not CRIU's reading of a personality Linux defines \\(as hex digits 0x1234567\\)$`
      )
    );
  }, 60_000);
});

test("persbits, zleadalive and pgrpalive: refused at dump, the target runs on (test/refusals.test.ts holds them too)", async () => {
  for (const [mode, what] of [
    ["persbits", /personality with bits Linux does not define \(0x10000\)/],
    ["zleadalive", /session other than its parent's, not led by a zombie whose exit hands it to that parent/],
    ["pgrpalive", /process group whose leader lives outside the tree \(process group \d+\)/],
  ] as const) {
    const w = await startWorkload("memsess", [mode], { stderr: "file" });
    if (existsSync(join(w.dir, "ext-pid"))) leftovers.push(Number(readFileSync(join(w.dir, "ext-pid"), "utf8")));
    const culprit = existsSync(join(w.dir, "culprit")) ? Number(readFileSync(join(w.dir, "culprit"), "utf8")) : w.pid;
    const r = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir(`memsess-refuse-${mode}`)]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n").length).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^Error \\(dump\\): process ${culprit}: `));
    expect(r.stderr).toMatch(what);
    expect(isAlive(w.pid)).toBe(true);
    await expectPass(w, 10_000);
  }
}, 60_000);
