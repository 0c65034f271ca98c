// --shell-job: a process whose stdio and controlling terminal are a terminal.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildWorkloads, workloadBin, criuBun, isAlive } from "./harness";
import { imagesDir, cleanupImages, waitReaped } from "./engine-helpers";

beforeAll(async () => { await buildWorkloads(); }, 120_000);
afterAll(() => cleanupImages());

test("a shell job on a pty: refused without --shell-job, restored on its terminal with it", async () => {
  const dir = mkdtempSync(join(tmpdir(), "criu-bun-wl-pty-"));
  const py = Bun.spawn(["python3", join(import.meta.dir, "ptyjob.py"), workloadBin("counter"), dir], { stdin: "ignore", stdout: "pipe", stderr: "inherit" });
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
    const ttyNr = () => Number(readFileSync(`/proc/${pid}/stat`, "latin1").replace(/^.*\) /s, "").split(" ")[4]);
    expect(readlinkSync(`/proc/${pid}/fd/0`)).toBe(tty);
    const ctty = ttyNr();
    expect(ctty).not.toBe(0);

    const img = imagesDir("pty");
    let r = criuBun(["dump", "-t", String(pid), "-D", img]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`terminal whose master is not in the tree (without --shell-job) ('${tty}'; --shell-job gives`);
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
});
