// --shell-job: a process whose stdio and controlling terminal are a terminal.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildWorkloads, workloadBin, criuBun, isAlive } from "./harness";
import { imagesDir, cleanupImages, waitReaped } from "./engine-helpers";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
afterAll(() => cleanupImages());

test("a shell job on a pty: refused without --shell-job, restored on its terminal with it", async () => {
  const dir = mkdtempSync(join(tmpdir(), "criu-bun-wl-pty-"));
  const py = Bun.spawn(["python3", join(import.meta.dir, "ptyjob.py"), workloadBin("counter"), dir], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "inherit",
  });
  try {
    const reader = py.stdout.getReader();
    let line = "";
    while (!line.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`ptyjob.py ended early: '${line}'`);
      line += new TextDecoder().decode(value);
    }
    const [pidS, tty] = line.trim().split(" ");
    const pid = Number(pidS);
    for (let i = 0; i < 500 && !existsSync(join(dir, "ready")); i++) await Bun.sleep(10);
    const ttyNr = () =>
      Number(
        readFileSync(`/proc/${pid}/stat`, "latin1")
          .replace(/^.*\) /s, "")
          .split(" ")[4]
      );
    expect(readlinkSync(`/proc/${pid}/fd/0`)).toBe(tty);
    const ctty = ttyNr();
    expect(ctty).not.toBe(0);

    const img = imagesDir("pty");
    let r = criuBun(["dump", "-t", String(pid), "-D", img]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(
      `terminal whose master is not in the tree (without --shell-job) ('${tty}'; --shell-job gives`
    );
    expect(isAlive(pid)).toBe(true);

    r = criuBun(["dump", "-t", String(pid), "-D", img, "--shell-job"]);
    expect(r.code).toBe(0);
    await waitReaped(pid);
    r = criuBun(["restore", "-d", "-D", img, "--shell-job"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    for (const fd of [0, 1, 2]) expect(readlinkSync(`/proc/${pid}/fd/${fd}`)).toBe(tty);
    expect(ttyNr()).toBe(ctty); // the terminal is its controlling terminal again
    writeFileSync(join(dir, "go"), "go\n");
    for (let i = 0; i < 1000 && !existsSync(join(dir, "result")); i++) await Bun.sleep(10);
    expect(readFileSync(join(dir, "result"), "utf8")).toStartWith("PASS");
  } finally {
    writeFileSync(join(dir, "quit"), "");
    await py.exited;
    rmSync(dir, { recursive: true, force: true });
  }
}, 120_000); // 35 s seen under load

test("a process that is not a session leader: dump refused without --shell-job, naming it; with it, restore refused without --shell-job, and with it the process joins criu-bun's session and group", async () => {
  const dir = mkdtempSync(join(tmpdir(), "criu-bun-wl-job-"));
  // sh leads a session; the counter it starts in the background is in sh's session and group
  const sh = Bun.spawn(["sh", "-c", `${workloadBin("counter")} "$0" & echo $! > "$0/job"; wait`, dir], {
    stdin: "ignore",
    stdout: "ignore",
    stderr: "ignore",
    detached: true,
  });
  const fields = (pid: number) =>
    readFileSync(`/proc/${pid}/stat`, "latin1")
      .replace(/^.*\) /s, "")
      .split(" ");
  let pid = 0;
  try {
    for (let i = 0; i < 500 && !existsSync(join(dir, "ready")); i++) await Bun.sleep(10);
    // sh writes job after forking the counter, which may be ready first: wait for the pid itself
    for (let i = 0; i < 500 && !pid; i++) {
      pid = existsSync(join(dir, "job")) ? Number(readFileSync(join(dir, "job"), "utf8")) : 0;
      if (!pid) await Bun.sleep(10);
    }
    expect(Number(fields(pid)[3])).toBe(sh.pid); // session
    expect(Number(fields(pid)[2])).toBe(sh.pid); // process group

    const img = imagesDir("job");
    let r = criuBun(["dump", "-t", String(pid), "-D", img]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `Error (dump): process ${pid} is not a session leader (its session is ${sh.pid}); dump with --shell-job to restore it into criu-bun's session, or make it one (setsid)\n`
    );
    expect(isAlive(pid)).toBe(true);
    expect(readFileSync(`/proc/${pid}/status`, "utf8")).toMatch(/TracerPid:\s*0\n/);

    r = criuBun(["dump", "-t", String(pid), "-D", img, "--shell-job"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    await waitReaped(pid);
    r = criuBun(["restore", "-d", "-D", img]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `Error (restore): process ${pid} was not a session leader (session ${sh.pid}); restore it with --shell-job to put it in criu-bun's session\n`
    );
    expect(isAlive(pid)).toBe(false);

    r = criuBun(["restore", "-d", "-D", img, "--shell-job"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    // criu-bun ran in our session and process group (spawned without setsid): so does the job now
    const mine = fields(process.pid);
    expect(fields(pid)[3]).toBe(mine[3]);
    expect(fields(pid)[2]).toBe(mine[2]);
    writeFileSync(join(dir, "go"), "go\n");
    for (let i = 0; i < 1000 && !existsSync(join(dir, "result")); i++) await Bun.sleep(10);
    expect(readFileSync(join(dir, "result"), "utf8")).toStartWith("PASS");
  } finally {
    if (pid)
      try {
        process.kill(pid, "SIGKILL");
      } catch {}
    try {
      sh.kill("SIGKILL");
    } catch {}
    rmSync(dir, { recursive: true, force: true });
  }
}, 120_000);
