// Inter-process channels whose data is in flight at dump: FIFOs, POSIX message queues and unix sockets with an external peer,
// on real processes: each workload holds data, is dumped, killed, restored, and verifies itself.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { buildWorkloads, cleanup, startWorkload, trigger, waitResult, waitGone, isAlive, criuBun } from "./harness";
import { dump, restore, imagesDir, cleanupImages, dumpRestoreVerify } from "./engine-helpers";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
/** external helpers (double-forked by the extunix workload): stopped at the end if still there */
const helpers: string[] = [];
afterAll(() => {
  for (const dir of helpers) {
    try {
      // (an empty file would give 0: kill(0) is this test run's whole process group)
      const pid = Number(readFileSync(join(dir, "ext-pid"), "utf8"));
      if (pid > 0) process.kill(pid, "SIGKILL");
    } catch {}
  }
  cleanup();
  cleanupImages();
});

function show(dir: string, file: string): any {
  const r = criuBun(["show", `${dir}/${file}`]);
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout);
}

describe("fifo", () => {
  test("ends in parent and child, data both ways, O_RDWR end, grown pipe, blocking and non-blocking ends", async () => {
    const { dir } = await dumpRestoreVerify("fifo");
    const files = show(dir, "files.img");
    const entries: any[] = files.entries ?? files;
    const fifos = entries.filter((e) => e.type === "FIFO");
    expect(fifos.length).toBe(5); // P: f1 read, f2 write, f3 rw; C: f1 write, f2 read
    // each fifo points at a REG entry with its path; data once per fifo (f1, f2, f3)
    for (const f of fifos) expect(entries.find((e) => e.id === f.fifo.regf_id)?.reg?.name).toMatch(/\/f[123]$/);
    const data = show(dir, "fifo-data.img");
    expect((data.entries ?? data).map((e: any) => e.bytes).sort((a: number, b: number) => a - b)).toEqual([
      9, 3007, 150000,
    ]);
    if (Bun.which("crit")) {
      for (const f of ["files.img", "fifo-data.img"]) {
        const p = Bun.spawnSync(["crit", "decode", "-i", `${dir}/${f}`], { stdout: "pipe", stderr: "pipe" });
        if (p.exitCode !== 0) throw new Error(`crit decode ${f} failed: ${p.stderr}`);
      }
    }
  }, 60_000);
});

describe("unix socket with its peer outside the tree", () => {
  test("dump refuses it without --ext-unix-sk: one line naming process, fd and peer; the workload keeps running", async () => {
    const w = await startWorkload("extunix");
    helpers.push(w.dir);
    const dir = imagesDir("extunix-refused");
    const r = criuBun(["dump", "-t", String(w.pid), "-D", dir]);
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split("\n");
    expect(lines.length).toBe(1);
    expect(lines[0]).toMatch(
      new RegExp(
        `^Error \\(files\\): process ${w.pid} fd \\d+: unix socket \\d+ is connected to socket \\d+ outside the dumped tree; use --ext-unix-sk$`
      )
    );
    expect(isAlive(w.pid)).toBe(true);
    trigger(w);
    const res = await waitResult(w, 10000);
    expect(res.text).toStartWith("PASS");
  }, 30_000);

  test("--ext-unix-sk with a datagram queued by the external peer (a named sender): refused in one line naming the sender, the workload keeps running", async () => {
    const w = await startWorkload("extunix");
    helpers.push(w.dir);
    const r = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir("extunix-named-sender"), "--ext-unix-sk"]);
    expect(r.code).toBe(1);
    // the one error line (any warning may come before it)
    const lines = r.stderr
      .trim()
      .split("\n")
      .filter((l) => !l.startsWith("Warn: "));
    expect(lines.length).toBe(1);
    expect(lines[0]).toMatch(
      new RegExp(
        `^Error \\(files\\): process ${w.pid} fd \\d+: queued message from a named sender restore cannot send from \\(a datagram from '${w.dir.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}/ext-d\\.sock' queued on unix socket \\d+\\) is not supported yet$`
      )
    );
    expect(isAlive(w.pid)).toBe(true);
    trigger(w);
    const res = await waitResult(w, 10000);
    expect(res.text).toStartWith("PASS");
  }, 30_000);

  test("--ext-unix-sk: datagram socket reconnected to the external peer by name with its queue (from an unnamed sender)", async () => {
    const w = await startWorkload("extunix", ["unnamed"]);
    helpers.push(w.dir);
    const dir = imagesDir("extunix");
    dump(w.pid, dir, ["--ext-unix-sk"]);
    await waitGone(w.pid);
    const files = show(dir, "files.img");
    const ext = (files.entries ?? files).filter(
      (e: any) => e.type === "UNIXSK" && e.usk.uflags && Number(e.usk.uflags) & 1
    );
    expect(ext.length).toBe(1); // the helper's datagram socket
    const r = await restore(dir, w.pid);
    trigger(w);
    const res = await waitResult(w, 15000);
    if (!res.pass) console.error(res.text);
    expect(res.text).toStartWith("PASS");
    expect(await r.proc.exited).toBe(0);
    if (Bun.which("crit")) {
      const p = Bun.spawnSync(["crit", "decode", "-i", `${dir}/files.img`], { stdout: "pipe", stderr: "pipe" });
      expect(p.exitCode).toBe(0);
    }
  }, 60_000);
});

describe("POSIX message queue", () => {
  test("queued messages with priorities, attributes, mode, fds in parent and child", async () => {
    const { dir } = await dumpRestoreVerify("mqueue");
    const files = show(dir, "files.img");
    expect((files.entries ?? files).filter((e: any) => e.type === "EXT").length).toBe(4); // P: q1 rw, w1, q2; C: its own
    const lines = readFileSync(join(dir, "mqueue.criu-bun.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    const q1 = lines.find((l) => l.k === "queue" && l.name.endsWith("-1"));
    expect(q1.msgs.map((m: any) => m.prio)).toEqual([5, 5, 1, 1, 0]);
    expect([q1.maxmsg, q1.msgsize, q1.mode]).toEqual([8, 200, 0o640]);
    if (Bun.which("crit")) {
      const p = Bun.spawnSync(["crit", "decode", "-i", `${dir}/files.img`], { stdout: "pipe", stderr: "pipe" });
      expect(p.exitCode).toBe(0);
    }
  }, 60_000);

  test("the messages read at dump are back in the queue when the dump fails later, and with --leave-running", async () => {
    const w = await startWorkload("mqueue");
    const failed = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir("mqueue-fault")], {
      env: { CRIU_BUN_FAULT: "dump-end" },
    });
    expect(failed.code).toBe(1);
    expect(failed.stderr).toContain("injected fault 'dump-end'");
    expect(isAlive(w.pid)).toBe(true);
    dump(w.pid, imagesDir("mqueue-lr"), ["--leave-running"]);
    expect(isAlive(w.pid)).toBe(true);
    trigger(w);
    const res = await waitResult(w, 10000);
    if (!res.pass) console.error(res.text);
    expect(res.text).toStartWith("PASS");
  }, 30_000);
});
