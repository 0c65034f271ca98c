// States a dump or restore used to lose or change silently (test/workloads/memsess.c MODE), also
// between criu-bun and CRIU 4.2 both ways: MAP_NORESERVE (smaps "nr", vma_entry.flags 0x4000),
// CRIU 4.2's shared anonymous memory (written as a memfd mapping of "/dev/zero"), a process in the
// session of a zombie leader that is not its parent's (made by that leader, handed to its parent by
// the leader's exit), and the personality (CRIU 4.2 writes its hex digits read as a decimal number).
// What cannot be made exactly is refused in one line: a session whose leader lives on (at dump, and
// at restore of CRIU's images, before anything is made), a personality with bits Linux does not define.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
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
import { cleanupImages, dump, imagesDir, restore, waitReaped, peer, havePeer } from "./engine-helpers";

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

/** The workload and every process below it (the zombie among them), read before a dump. */
function treeOf(root: number): number[] {
  const parent = new Map<number, number>();
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const st = readFileSync(`/proc/${e}/stat`, "latin1");
      parent.set(Number(e), Number(st.slice(st.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {}
  }
  const out = [root];
  for (let i = 0; i < out.length; i++) for (const [p, pp] of parent) if (pp === out[i]) out.push(p);
  return out;
}

async function allGone(pids: number[]) {
  for (const p of pids) await waitReaped(p, 10_000);
}

/** criu-bun dumps, criu-bun restores; the workload's verdict */
async function bunBun(w: Workload, tag: string) {
  const pids = treeOf(w.pid);
  const dir = imagesDir(tag);
  dump(w.pid, dir);
  await allGone(pids);
  const r = await restore(dir, w.pid);
  trigger(w);
  expect((await waitResult(w, 15_000)).text).toStartWith("PASS");
  expect(await r.proc.exited).toBe(0);
  return dir;
}

/** CRIU 4.2 dumps, criu-bun restores */
async function criuBunRestores(w: Workload, tag: string) {
  const pids = treeOf(w.pid);
  const dir = imagesDir(tag);
  peer(["dump", "-t", String(w.pid)], dir, "dump.log");
  await allGone(pids);
  const r = await restore(dir, w.pid);
  trigger(w);
  expect((await waitResult(w, 15_000)).text).toStartWith("PASS");
  expect(await r.proc.exited).toBe(0);
  return dir;
}

/** criu-bun dumps, CRIU 4.2 restores */
async function bunCriuRestores(w: Workload, tag: string) {
  const pids = treeOf(w.pid);
  const dir = imagesDir(tag);
  dump(w.pid, dir);
  await allGone(pids);
  try {
    peer(["restore", "-d"], dir, "restore.log");
    await waitUntil(`restored ${w.pid}`, () => existsSync(`/proc/${w.pid}`));
    trigger(w);
    expect((await waitResult(w, 15_000)).text).toStartWith("PASS");
  } finally {
    for (const p of pids)
      try {
        process.kill(p, "SIGKILL");
      } catch {}
  }
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
  test("noreserve: a 64 GiB MAP_NORESERVE reservation (dumped with flags 0x4000) can be made writable after restore", async () => {
    const w = await startWorkload("memsess", ["noreserve"], { stderr: "file" });
    const dir = await bunBun(w, "memsess-noreserve");
    // PROT_NONE reservation: MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE, as CRIU writes it
    expect(readFileSync(join(dir, "dump.log"), "utf8")).toMatch(/ --- flags 0x4022 /);
    expect(readFileSync(join(dir, "restore.log"), "utf8")).toMatch(/mapped vma \S+ --- flags 0x4022 /);
  }, 60_000);

  test("shanon: shared anonymous and /dev/zero memory shared with a child", async () => {
    const w = await startWorkload("memsess", ["shanon"], { stderr: "file" });
    await bunBun(w, "memsess-shanon");
  }, 60_000);

  test("zlead: a process in its zombie leader's session, handed to the subreaper root, stays in that session and group", async () => {
    const w = await startWorkload("memsess", ["zlead"], { stderr: "file" });
    const dir = await bunBun(w, "memsess-zlead");
    const log = readFileSync(join(dir, "restore.log"), "utf8");
    expect(log).toMatch(/made by \d+, the zombie leader of its session \d+, whose exit hands it to its parent \d+/);
    expect(log).toMatch(/its parent is \d+ again, in session \d+/);
  }, 60_000);

  test("pgrporphan: a process group whose leader exited, its members handed to the subreaper root, is made again (a helper leads it while they join)", async () => {
    const w = await startWorkload("memsess", ["pgrporphan"], { stderr: "file" });
    const dir = await bunBun(w, "memsess-pgrporphan");
    expect(readFileSync(join(dir, "restore.log"), "utf8")).toMatch(
      /process group \d+: its helper led it while its members joined, and was reaped by process \d+/
    );
  }, 60_000);

  test("pers: personality 0x1060000", async () => {
    const w = await startWorkload("memsess", ["pers"], { stderr: "file" });
    await bunBun(w, "memsess-pers");
  }, 60_000);
});

describe.skipIf(!havePeer)("with CRIU 4.2", () => {
  test("noreserve: CRIU 4.2 dumps (flags 0x4000), criu-bun restores the reservation unaccounted", async () => {
    const w = await startWorkload("memsess", ["noreserve"], { stderr: "file" });
    await criuBunRestores(w, "memsess-peer-noreserve");
  }, 60_000);

  test("noreserve: criu-bun dumps a 64 GiB MAP_NORESERVE reservation, CRIU 4.2 restores it", async () => {
    const w = await startWorkload("memsess", ["noreserve"], { stderr: "file" });
    await bunCriuRestores(w, "memsess-bun-noreserve");
  }, 60_000);

  test("shared: CRIU 4.2 dumps shared anonymous memory (as a memfd mapping of /dev/zero), criu-bun restores it shared", async () => {
    // (in an IPC namespace of its own: CRIU dumps a SysV segment only with its namespace)
    const w = await startWorkload("shared", [], { stderr: "file", wrap: ["unshare", "--ipc", "--"] });
    const dir = await criuBunRestores(w, "memsess-peer-shared");
    expect(readFileSync(join(dir, "restore.log"), "utf8")).toMatch(
      /is shared anonymous memory: read as VMA_ANON_SHARED shmid \d+/
    );
  }, 60_000);

  test("shanon: CRIU 4.2 dumps MAP_SHARED anonymous and /dev/zero memory of a parent and child, criu-bun restores both shared", async () => {
    const w = await startWorkload("memsess", ["shanon"], { stderr: "file" });
    await criuBunRestores(w, "memsess-peer-shanon");
  }, 60_000);

  test("zlead: CRIU 4.2 dumps a process in its zombie leader's session, criu-bun restores it there", async () => {
    const w = await startWorkload("memsess", ["zlead"], { stderr: "file" });
    await criuBunRestores(w, "memsess-peer-zlead");
  }, 60_000);

  test("zleadalive: CRIU 4.2's images of a process in a live leader's session other than its parent's are refused in one line before anything is made", async () => {
    const w = await startWorkload("memsess", ["zleadalive"], { stderr: "file" });
    const pids = treeOf(w.pid);
    const dir = imagesDir("memsess-peer-zleadalive");
    peer(["dump", "-t", String(w.pid)], dir, "dump.log");
    await allGone(pids);
    const b = Number(readFileSync(join(w.dir, "culprit"), "utf8"));
    refusedAtRestore(
      dir,
      pids,
      new RegExp(
        `^Error \\(restore\\): process ${b}: session \\d+, which its parent ${w.pid} is not in, is led by process \\d+, which is alive: it cannot be made in that session$`
      )
    );
  }, 60_000);

  test("pgrporphan: CRIU 4.2 dumps a process group whose leader exited, criu-bun makes it again", async () => {
    const w = await startWorkload("memsess", ["pgrporphan"], { stderr: "file" });
    await criuBunRestores(w, "memsess-peer-pgrporphan");
  }, 60_000);

  test("pgrporphan: criu-bun dumps a process group whose leader exited, CRIU 4.2 restores it", async () => {
    const w = await startWorkload("memsess", ["pgrporphan"], { stderr: "file" });
    await bunCriuRestores(w, "memsess-bun-pgrporphan");
  }, 60_000);

  test("pers: CRIU 4.2 writes 0x1060000 as 1060000; criu-bun restores 0x1060000", async () => {
    const w = await startWorkload("memsess", ["pers"], { stderr: "file" });
    const dir = await criuBunRestores(w, "memsess-peer-pers");
    expect(readFileSync(join(dir, "restore.log"), "utf8")).toMatch(
      /personality 1060000 \(CRIU's decimal reading of its hex digits\) is 0x1060000/
    );
  }, 60_000);

  test("pers: a personality in CRIU's images that is no reading of one Linux defines is refused in one line before anything is made", async () => {
    const w = await startWorkload("memsess", ["pers"], { stderr: "file" });
    const pids = treeOf(w.pid);
    const dir = imagesDir("memsess-peer-persbad");
    peer(["dump", "-t", String(w.pid)], dir, "dump.log");
    await allGone(pids);
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
    trigger(w);
    expect((await waitResult(w, 10_000)).text).toStartWith("PASS");
  }
}, 60_000);
