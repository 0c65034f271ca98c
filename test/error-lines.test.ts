// Every line that reports a failed system call takes one shape (src/sys/errno.ts):
//   "<who>: <what> failed: ENAME (errno N: text)"
// built with sysFailed() or errnoText(). This test reads src/ and fails on a message that prints
// an errno some other way: a bare number ("failed (${-r})"), a bare name (errnoName in a message,
// node's e.code), or the errno part not after ": ". The lines' shape end to end (through
// ./criu-bun, with the process named) is in engine-errors.test.ts "failure lines".
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { errnoText, sysFailed, errnoName, errnoOf, SysError, E } from "../src/sys/errno";
import { REPO_ROOT } from "./harness";
import { ALLOWED, BARE, bareErrnoLines, sources } from "./error-scan";

const SRC = join(REPO_ROOT, "src");
describe("failure lines in src/", () => {
  test("no message prints an errno without errnoText/sysFailed", () => {
    expect(bareErrnoLines(SRC)).toEqual([]);
  });

  test("the allow-list holds only lines that are still there", () => {
    const all = sources(SRC).map((f) => readFileSync(f, "utf8"));
    for (const piece of ALLOWED) expect(all.some((t) => t.includes(piece))).toBe(true);
  });

  test("the scan finds each way of printing a bare errno", () => {
    const samples = [
      'throw new CriuError("x", `${where}: socket failed (${-r})`);',
      'throw new CriuError("x", `${where}: write failed (${n})`);',
      'throw new CriuError("x", `mmap failed (${r < 0n ? "errno " + -r : hex(r)})`);',
      'throw new CriuError("x", `cannot read ${p}: ${e.code ?? e.message}`);',
      'throw new CriuError("x", `seize ${tid}: ${errnoName(-r)}`);',
      'throw new CriuError("x", `${where}: dup failed (${errnoText(-r)})`);',
    ];
    for (const s of samples) expect(BARE.some((b) => b.re.test(s))).toBe(true);
    expect(BARE.some((b) => b.re.test('throw new CriuError("x", sysFailed(where, "dup", -r));'))).toBe(false);
  });
});

describe("the helper", () => {
  test("names and numbers agree with the kernel's and glibc's (python3's errno and os.strerror)", () => {
    const py = Bun.spawnSync([
      "python3",
      "-c",
      "import errno,os\nfor n in (1,2,3,13,16,17,22,24,38,95,98,111,133): print(n, os.strerror(n))",
    ]);
    expect(py.exitCode).toBe(0);
    const lines = py.stdout.toString().trim().split("\n");
    expect(lines.length).toBe(13);
    for (const l of lines) {
      const [n, ...text] = l.split(" ");
      expect(errnoText(Number(n))).toBe(`${errnoName(Number(n))} (errno ${n}: ${text.join(" ")})`);
    }
    expect(E.ENOENT).toBe(2);
    expect(E.EHWPOISON).toBe(133);
    expect(errnoName(-3)).toBe("ESRCH");
    expect(errnoText(-13n)).toBe("EACCES (errno 13: Permission denied)");
  });

  test("sysFailed, SysError and node:fs errors give the one shape", () => {
    expect(sysFailed("process 42 fd 3", "dup", -9)).toBe(
      "process 42 fd 3: dup failed: EBADF (errno 9: Bad file descriptor)"
    );
    expect(sysFailed("process 42", "setns", 1, "needs CAP_SYS_ADMIN")).toBe(
      "process 42: setns failed: EPERM (errno 1: Operation not permitted); needs CAP_SYS_ADMIN"
    );
    expect(new SysError("open", 2, "/x").message).toBe("open /x failed: ENOENT (errno 2: No such file or directory)");
    let err: unknown;
    try {
      readFileSync("/nonexistent/criu-bun");
    } catch (e) {
      err = e;
    }
    expect(errnoOf(err)).toBe(2);
    expect(errnoText(err)).toBe("ENOENT (errno 2: No such file or directory)");
    expect(errnoText(new Error("not a syscall"))).toBe("not a syscall");
    expect(errnoText(4000)).toBe("E4000 (errno 4000)");
  });

  test("every errno with a text has a name in E, and every name in E has a text", () => {
    // the texts (by number) and the names (E) are two literals: the same set of numbers in both
    const withText: number[] = [];
    for (let n = 1; n < 1024; n++) if (errnoText(n) !== `E${n} (errno ${n})`) withText.push(n);
    expect(withText).toEqual(Object.values(E).sort((a, b) => a - b));
    for (const [name, n] of Object.entries(E)) {
      expect(errnoName(n)).toBe(name);
      expect(errnoText(-n)).toMatch(new RegExp(`^${name} \\(errno ${n}: \\S.*\\)$`));
    }
    expect(new Set(Object.values(E)).size).toBe(Object.keys(E).length);
  });
});
