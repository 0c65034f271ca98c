// The command line's --action-script (criu's actions and environment, in order, for a dump and a
// restore), and the page server's --pidfile, --status-fd and -d/--daemon.
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  buildWorkloads,
  cleanup,
  criuBun,
  criuBunCommand,
  isAlive,
  startWorkload,
  trigger,
  waitResult,
  waitUntil,
} from "./harness";
import { waitReaped } from "./engine-helpers";

setDefaultTimeout(90_000);
const tmp = mkdtempSync(join(tmpdir(), "criu-bun-actions-"));
const NOCONF = ["--no-default-config"];
beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
afterAll(() => {
  cleanup();
  rmSync(tmp, { recursive: true, force: true });
});

/** An action script that appends "ACTION|IMAGE_DIR|INIT_PID" to a record file, failing at $FAIL_AT. */
function recorder(name: string): { script: string; record: string; read: () => string[] } {
  const record = join(tmp, `${name}.log`);
  const script = join(tmp, `${name}.sh`);
  writeFileSync(
    script,
    `#!/bin/sh\necho "$CRTOOLS_SCRIPT_ACTION|$CRTOOLS_IMAGE_DIR|\${CRTOOLS_INIT_PID-none}" >> ${record}\n` +
      `[ "$CRTOOLS_SCRIPT_ACTION" = "$FAIL_AT" ] && exit 3\nexit 0\n`
  );
  chmodSync(script, 0o755);
  return { script, record, read: () => (existsSync(record) ? readFileSync(record, "utf8").trim().split("\n") : []) };
}

describe("--action-script", () => {
  test("every action of a dump and a restore, in criu's order, with CRTOOLS_IMAGE_DIR and CRTOOLS_INIT_PID; two scripts run in the order given", async () => {
    const w = await startWorkload("counter");
    const dir = mkdtempSync(join(tmp, "img-"));
    const a = recorder("a"),
      b = recorder("b");
    let r = criuBun([
      "dump",
      "-t",
      String(w.pid),
      "-D",
      dir,
      "--action-script",
      a.script,
      `--action-script=${b.script}`,
      ...NOCONF,
    ]);
    expect(`${r.code} ${r.stderr}`).toBe("0 ");
    const p = w.pid;
    expect(a.read()).toEqual([`pre-dump|${dir}|${p}`, `post-dump|${dir}|${p}`]);
    expect(b.read()).toEqual(a.read());
    await waitReaped(p);
    rmSync(a.record);
    r = criuBun(["restore", "-d", "-D", dir, "--action-script", a.script, ...NOCONF]);
    expect(`${r.code} ${r.stderr}`).toBe("0 ");
    expect(a.read()).toEqual([
      `pre-restore|${dir}|none`,
      `post-restore|${dir}|${p}`,
      `pre-resume|${dir}|${p}`,
      `post-resume|${dir}|${p}`,
    ]);
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
  });

  test("a script failing at post-dump fails the dump (exit 1, one error line) and the tree keeps running", async () => {
    const w = await startWorkload("counter");
    const dir = mkdtempSync(join(tmp, "img-"));
    const a = recorder("fail");
    const r = criuBun(["dump", "-t", String(w.pid), "-D", dir, "--action-script", a.script, ...NOCONF], {
      env: { FAIL_AT: "post-dump" },
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`Error (action-script): ${a.script} failed at post-dump (exit 3)\n`);
    expect(a.read().map((l) => l.split("|")[0])).toEqual(["pre-dump", "post-dump"]);
    expect(isAlive(w.pid)).toBe(true);
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
  });
});

describe("page-server", () => {
  let port = 27000 + (process.pid % 1000);
  /** dump a counter to the page server at `port`, then restore and check it */
  async function dumpTo(psDir: string) {
    const w = await startWorkload("counter");
    const dir = mkdtempSync(join(tmp, "ps-img-"));
    const r = criuBun([
      "dump",
      "-t",
      String(w.pid),
      "-D",
      dir,
      "--page-server",
      "--address",
      "127.0.0.1",
      "--port",
      String(port),
      ...NOCONF,
    ]);
    expect(`${r.code} ${r.stderr}`).toBe("0 ");
    expect(readdirSync(psDir).some((f) => f.startsWith("pages-"))).toBe(true);
    return w;
  }

  test("--status-fd gets one \\0 byte once the server listens, then is closed; --pidfile names the server; the status-ready action runs", async () => {
    port++;
    const psDir = mkdtempSync(join(tmp, "ps-"));
    const a = recorder("ps");
    const fds = new Int32Array(2);
    const { syscall, addr } = await import("../src/sys/syscall");
    expect(syscall(293 /* pipe2 */, addr(fds), 0o2000000)).toBe(0);
    const ps = Bun.spawn(
      [
        ...criuBunCommand(),
        "page-server",
        "-D",
        psDir,
        "--address",
        "127.0.0.1",
        "--port",
        String(port),
        "--status-fd",
        "3",
        "--pidfile",
        "ps.pid",
        "--action-script",
        a.script,
        ...NOCONF,
      ],
      { stdio: ["ignore", "ignore", "pipe", fds[1]] }
    );
    require("node:fs").closeSync(fds[1]);
    const buf = new Uint8Array(2);
    // blocks until the server writes; a second read gives EOF: the server closed its end
    expect(syscall(0, fds[0], addr(buf), 2)).toBe(1);
    expect(buf[0]).toBe(0);
    expect(syscall(0, fds[0], addr(buf), 2)).toBe(0);
    require("node:fs").closeSync(fds[0]);
    expect(readFileSync(join(psDir, "ps.pid"), "utf8")).toBe(String(ps.pid));
    expect(a.read()).toEqual([`status-ready|${psDir}|none`]);
    const w = await dumpTo(psDir);
    expect(await ps.exited).toBe(0);
    trigger(w); // the dump killed it; nothing more to check of it
  });

  test("-d: criu-bun returns once the daemon listens; the daemon writes its own pid and serves one dump", async () => {
    port++;
    const psDir = mkdtempSync(join(tmp, "ps-"));
    const r = criuBun([
      "page-server",
      "-d",
      "-D",
      psDir,
      "--address",
      "127.0.0.1",
      "--port",
      String(port),
      "--pidfile",
      "d.pid",
      "-o",
      "ps.log",
      "-v4",
      ...NOCONF,
    ]);
    expect(`${r.code} ${r.stderr}`).toBe("0 ");
    const pid = Number(readFileSync(join(psDir, "d.pid"), "utf8"));
    expect(isAlive(pid)).toBe(true);
    // its own session, detached from us
    expect(
      readFileSync(`/proc/${pid}/stat`, "latin1")
        .replace(/^.*\) /s, "")
        .split(" ")[3]
    ).toBe(String(pid));
    await dumpTo(psDir);
    await waitUntil("the page server daemon to exit after the dump", () => !isAlive(pid), 10_000);
    expect(readFileSync(join(psDir, "ps.log"), "utf8")).toContain("Page server finished");
  });
});
