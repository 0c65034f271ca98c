// Bad input gets one clear error line and a non-zero exit, and nothing is lost: the target of a
// failed dump keeps running as before; a failed restore leaves no process behind.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync, readFileSync, truncateSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { buildWorkloads, cleanup, startWorkload, trigger, waitResult, isAlive, criuBun, waitUntil } from "./harness";
import { dump, imagesDir, cleanupImages, restore, waitReaped } from "./engine-helpers";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
afterAll(() => {
  cleanup();
  cleanupImages();
});

function errorLines(stderr: string) {
  return stderr.split("\n").filter((l) => l.startsWith("Error ("));
}

describe("dump failures", () => {
  test("non-existent PID", () => {
    const r = criuBun(["dump", "-t", "999999", "-D", imagesDir("nopid")]);
    expect(r.code).not.toBe(0);
    expect(errorLines(r.stderr)).toEqual([
      "Error (dump): process 999999 does not exist: ESRCH (errno 3: No such process)",
    ]);
  });

  test("unwritable images dir leaves the target running", async () => {
    const w = await startWorkload("counter");
    const ro = imagesDir("ro");
    const m = Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", ro]);
    expect(m.exitCode).toBe(0);
    try {
      const r = criuBun(["dump", "-t", String(w.pid), "-D", ro]);
      expect(r.code).not.toBe(0);
      const errs = errorLines(r.stderr);
      expect(errs.length).toBe(1);
      expect(errs[0]).toContain("not writable");
    } finally {
      Bun.spawnSync(["umount", ro]);
    }
    trigger(w);
    expect((await waitResult(w)).text).toStartWith("PASS");
  });

  test("missing images dir", () => {
    const r = criuBun(["dump", "-t", String(process.pid), "-D", "/nonexistent/criu-bun"]);
    expect(r.code).not.toBe(0);
    expect(errorLines(r.stderr)[0]).toContain("does not exist");
  });

  test("a failed dump leaves every thread running (8 threads)", async () => {
    const w = await startWorkload("threads", ["8"]);
    const r = criuBun(["dump", "-t", String(w.pid), "-D", "/nonexistent/x"]);
    expect(r.code).not.toBe(0);
    const status = readFileSync(`/proc/${w.pid}/status`, "utf8");
    expect(status).not.toMatch(/TracerPid:\s*[1-9]/);
    trigger(w);
    expect((await waitResult(w)).text).toStartWith("PASS");
  });
});

describe("restore failures", () => {
  test("empty images dir", () => {
    const r = criuBun(["restore", "-d", "-D", imagesDir("empty")]);
    expect(r.code).not.toBe(0);
    expect(errorLines(r.stderr)).toEqual([expect.stringContaining("inventory.img is missing")]);
  });

  async function dumpedCounter(tag: string) {
    const w = await startWorkload("counter");
    const dir = imagesDir(tag);
    dump(w.pid, dir);
    await waitReaped(w.pid);
    return { w, dir };
  }

  test("truncated core image: error names file and offset, no process left", async () => {
    const { w, dir } = await dumpedCounter("trunc");
    const core = join(dir, `core-${w.pid}.img`);
    truncateSync(core, statSync(core).size - 7);
    const r = criuBun(["restore", "-d", "-D", dir]);
    expect(r.code).not.toBe(0);
    const errs = errorLines(r.stderr);
    expect(errs.length).toBe(1);
    expect(errs[0]).toContain(`core-${w.pid}.img`);
    expect(errs[0]).toMatch(/offset \d+/);
    expect(isAlive(w.pid)).toBe(false);
  });

  test("garbage pagemap and truncated pages are refused before anything runs", async () => {
    const { w, dir } = await dumpedCounter("garbage");
    const pm = join(dir, `pagemap-${w.pid}.img`);
    const good = readFileSync(pm);
    writeFileSync(pm, Buffer.from("this is not an image at all"));
    let r = criuBun(["restore", "-d", "-D", dir]);
    expect(r.code).not.toBe(0);
    expect(errorLines(r.stderr)[0]).toContain(`pagemap-${w.pid}.img`);
    writeFileSync(pm, good);
    const pages = readdirSync(dir).find((f) => f.startsWith("pages-"))!;
    truncateSync(join(dir, pages), Math.floor(statSync(join(dir, pages)).size / 2));
    r = criuBun(["restore", "-d", "-D", dir]);
    expect(r.code).not.toBe(0);
    expect(errorLines(r.stderr)[0]).toContain(pages);
    expect(isAlive(w.pid)).toBe(false);
  });

  test("restoring into a busy PID is refused", async () => {
    const w = await startWorkload("counter");
    const dir = imagesDir("busy");
    dump(w.pid, dir, ["-R"]);
    const r = criuBun(["restore", "-d", "-D", dir]);
    expect(r.code).not.toBe(0);
    expect(errorLines(r.stderr)).toEqual([`Error (restore): PID ${w.pid} is in use (by 'counter')`]);
    trigger(w);
    expect((await waitResult(w)).text).toStartWith("PASS");
  });

  test("a file the images need is gone: clear error, no process left", async () => {
    const w = await startWorkload("files");
    const dir = imagesDir("gone");
    dump(w.pid, dir);
    await waitReaped(w.pid);
    const victim = readdirSync(w.dir).find((f) => f.includes("ro"))!;
    Bun.spawnSync(["mv", join(w.dir, victim), join(w.dir, victim + ".moved")]);
    const r = criuBun(["restore", "-d", "-D", dir]);
    expect(r.code).not.toBe(0);
    const errs = errorLines(r.stderr);
    expect(errs.length).toBe(1);
    expect(errs[0]).toContain("does not exist any more");
    // the one failure-line shape: the process, the file, the errno's name, number and text
    expect(errs[0]).toStartWith(`Error (restore): process ${w.pid} `);
    expect(errs[0]).toContain(
      `'${join(w.dir, victim)}' does not exist any more: ENOENT (errno 2: No such file or directory)`
    );
    expect(isAlive(w.pid)).toBe(false);
    // put it back: now it restores
    Bun.spawnSync(["mv", join(w.dir, victim + ".moved"), join(w.dir, victim)]);
    const rr = await restore(dir, w.pid);
    trigger(w);
    expect((await waitResult(w)).text).toStartWith("PASS");
    expect(await rr.proc.exited).toBe(0);
  });
});

// Every line reporting a failed system call reads "<process and resource>: <what> failed: ENAME
// (errno N: text)" (src/sys/errno.ts; error-lines.test.ts holds src/ to it).
describe("failure lines", () => {
  test("a dump of a process another tracer holds: PTRACE_SEIZE's EPERM, the process named; it runs on", async () => {
    const w = await startWorkload("counter");
    // the other tracer: python3 seizes the workload through libc's ptrace (PTRACE_SEIZE) and holds it
    const tracer = Bun.spawn(
      [
        "python3",
        "-c",
        [
          "import ctypes, sys, time",
          "libc = ctypes.CDLL(None, use_errno=True)",
          "libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]",
          `if libc.ptrace(0x4206, ${w.pid}, None, None) != 0: sys.exit(ctypes.get_errno())`,
          "print('seized', flush=True)",
          "time.sleep(120)",
        ].join("\n"),
      ],
      { stdout: "pipe", stderr: "inherit" }
    );
    try {
      await waitUntil(
        "the workload is traced by python3",
        () => /TracerPid:\s*[1-9]/.test(readFileSync(`/proc/${w.pid}/status`, "utf8")),
        10_000
      );
      const r = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir("traced")]);
      expect(r.code).not.toBe(0);
      expect(errorLines(r.stderr)).toEqual([
        `Error (seize): process ${w.pid}: PTRACE_SEIZE failed: EPERM (errno 1: Operation not permitted); already traced, or not permitted`,
      ]);
    } finally {
      tracer.kill(9);
      await tracer.exited;
    }
    await waitUntil("python3's trace is gone", () =>
      /TracerPid:\s*0\b/.test(readFileSync(`/proc/${w.pid}/status`, "utf8"))
    );
    trigger(w);
    expect((await waitResult(w)).text).toStartWith("PASS");
  });

  test("a restore from an images directory that is not there: ENOENT, the directory named", () => {
    const r = criuBun(["restore", "-d", "-D", "/nonexistent/criu-bun"]);
    expect(r.code).not.toBe(0);
    expect(errorLines(r.stderr)).toEqual([
      "Error (restore): images directory '/nonexistent/criu-bun' does not exist: ENOENT (errno 2: No such file or directory)",
    ]);
  });
});

describe("cli", () => {
  test("unknown command and option", () => {
    let r = criuBun(["frobnicate"]);
    expect(r.code).not.toBe(0);
    expect(errorLines(r.stderr)[0]).toContain("unknown command 'frobnicate'");
    r = criuBun(["dump", "--bogus-option"]);
    expect(r.code).not.toBe(0);
    expect(errorLines(r.stderr)[0]).toContain("--bogus-option");
  });
  test("--help and --version", () => {
    const h = criuBun(["--help"]);
    expect(h.code).toBe(0);
    for (const c of ["check", "dump", "pre-dump", "restore", "show", "page-server", "lazy-pages"])
      expect(h.stdout).toContain(c);
    for (const o of [
      "--tree",
      "--images-dir",
      "--leave-running",
      "--restore-detached",
      "--shell-job",
      "--tcp-established",
      "--pidfile",
      "--display-stats",
      "--log-file",
    ]) {
      expect(h.stdout).toContain(o);
    }
    const v = criuBun(["--version"]);
    expect(v.code).toBe(0);
    expect(v.stdout).toMatch(/Version: \d+\.\d+/);
    // answered before any command module loads (src/main.ts), wherever it is: same text
    for (const a of [["-V"], ["dump", "--version"]]) expect(criuBun(a).stdout).toBe(v.stdout);
  });
  test("-v4 and -o write a criu-style log", async () => {
    const w = await startWorkload("spin");
    const dir = imagesDir("log");
    const r = criuBun(["dump", "-t", String(w.pid), "-D", dir, "-R", "-v4", "-o", "d.log"]);
    expect(r.code).toBe(0);
    const log = readFileSync(join(dir, "d.log"), "utf8");
    expect(log).toMatch(/^\(\d\d\.\d{6}\) Seized process \d+/m);
    trigger(w);
    expect((await waitResult(w)).text).toStartWith("PASS");
  });
});

describe("failures in the middle leave nothing behind", () => {
  test("a dump failing after every image is written releases the whole tree untouched", async () => {
    const w = await startWorkload("tree");
    const r = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir("fault-dump")], {
      env: { CRIU_BUN_FAULT: "dump-end" },
    });
    expect(r.code).not.toBe(0);
    expect(errorLines(r.stderr)).toEqual(["Error (dump): injected fault 'dump-end' (CRIU_BUN_FAULT)"]);
    expect(readFileSync(`/proc/${w.pid}/status`, "utf8")).toMatch(/TracerPid:\s*0\n/);
    trigger(w);
    expect((await waitResult(w)).text).toStartWith("PASS");
  });

  for (const stage of ["restore-files", "restore-end"]) {
    test(`a restore failing at ${stage} kills every process it built`, async () => {
      const w = await startWorkload("tree");
      const pids = [
        w.pid,
        ...readdirSync(w.dir)
          .filter((f) => f.startsWith("s-"))
          .map((f) => Number(readFileSync(join(w.dir, f), "utf8").split(" ")[0])),
      ];
      const dir = imagesDir("fault-restore");
      dump(w.pid, dir);
      for (const p of pids) await waitReaped(p).catch(() => {});
      const r = criuBun(["restore", "-d", "-D", dir], { env: { CRIU_BUN_FAULT: stage } });
      expect(r.code).not.toBe(0);
      expect(errorLines(r.stderr)).toEqual([`Error (restore): injected fault '${stage}' (CRIU_BUN_FAULT)`]);
      await waitUntil("every process the failed restore built to be gone", () => pids.every((p) => !isAlive(p)), 2000);
      // and the images are still good
      const rr = await restore(dir, w.pid);
      trigger(w);
      expect((await waitResult(w, 15000)).text).toStartWith("PASS");
      expect(await rr.proc.exited).toBe(0);
    });
  }
});
