// src/sys/fs.ts and src/sys/path.ts stand in for node:fs and node:path everywhere in src/. They are
// held here to the runtime's own node:fs and node:path: the same calls on the same files must
// give the same results and fail with the same code, errno and syscall.
import { describe, expect, test, beforeAll, afterAll } from "bun:test";
import * as nfs from "node:fs";
import * as npath from "node:path";
import * as sfs from "../src/sys/fs";
import * as spath from "../src/sys/path";
import { addr, cstr } from "../src/sys/syscall";
import { toArrayBuffer, type Pointer } from "bun:ffi";

let dir: string;
beforeAll(() => {
  dir = nfs.mkdtempSync("/tmp/criu-bun-sysfs-");
  nfs.writeFileSync(`${dir}/file`, "hello\nwörld\n");
  nfs.writeFileSync(`${dir}/latin`, Buffer.from([0x61, 0xe9, 0xff, 0x00, 0x62]));
  nfs.writeFileSync(`${dir}/big`, Buffer.alloc(300000, 7));
  nfs.writeFileSync(`${dir}/empty`, "");
  nfs.mkdirSync(`${dir}/sub/deeper`, { recursive: true });
  nfs.writeFileSync(`${dir}/sub/deeper/x`, "x");
  nfs.symlinkSync("file", `${dir}/link`);
  nfs.symlinkSync("link", `${dir}/link2`);
  nfs.symlinkSync("nowhere", `${dir}/dangling`);
  nfs.symlinkSync("/etc", `${dir}/outside`);
  expect(Bun.spawnSync(["mkfifo", `${dir}/fifo`]).exitCode).toBe(0);
  for (let i = 0; i < 600; i++) nfs.writeFileSync(`${dir}/sub/f-${"n".repeat(i % 40)}-${i}`, "");
});
afterAll(() => nfs.rmSync(dir, { recursive: true, force: true }));

/** what a call returned or how it failed, comparable across the two */
function outcome(fn: () => unknown): unknown {
  try {
    return { ok: fn() };
  } catch (e) {
    const x = e as { code?: string; errno?: number; syscall?: string; message?: string };
    return { code: x.code, errno: x.errno, syscall: x.syscall, message: x.message };
  }
}
// birthtime is left out: node:fs asks statx for it, sys/fs.ts (and src/) does not use it
const plain = (st: object | undefined) =>
  st
    ? JSON.parse(
        JSON.stringify(st, (k, v) => (k.startsWith("birthtime") ? undefined : typeof v === "bigint" ? `${v}n` : v))
      )
    : st;
const kinds = (st: { isFile(): boolean; isDirectory(): boolean; isSymbolicLink(): boolean; isFIFO(): boolean }) => [
  st.isFile(),
  st.isDirectory(),
  st.isSymbolicLink(),
  st.isFIFO(),
];

describe("sys/path is node:path (POSIX)", () => {
  const paths = [
    "",
    ".",
    "..",
    "/",
    "//",
    "a",
    "a/",
    "/a",
    "/a/",
    "a/b/c",
    "/a/b/c/",
    "a//b",
    "a/./b",
    "a/../b",
    "../a",
    "/../a",
    "a/b/../../..",
    "./",
    "/a/b//c",
    "a/b/",
    "x.img",
    "/dir/x.img",
  ];
  test("join, normalize, dirname, basename, isAbsolute", () => {
    for (const p of paths) {
      expect([p, spath.normalize(p)]).toEqual([p, npath.normalize(p)]);
      expect([p, spath.dirname(p)]).toEqual([p, npath.dirname(p)]);
      expect([p, spath.basename(p)]).toEqual([p, npath.basename(p)]);
      expect([p, spath.basename(p, ".img")]).toEqual([p, npath.basename(p, ".img")]);
      expect([p, spath.isAbsolute(p)]).toEqual([p, npath.isAbsolute(p)]);
      for (const q of paths) expect([p, q, spath.join(p, q)]).toEqual([p, q, npath.join(p, q)]);
    }
    expect(spath.join()).toBe(npath.join());
  });
  test("resolve", () => {
    for (const p of paths) {
      expect([p, spath.resolve(p)]).toEqual([p, npath.resolve(p)]);
      expect([p, spath.resolve("/base", p)]).toEqual([p, npath.resolve("/base", p)]);
      expect([p, spath.resolve(p, "x")]).toEqual([p, npath.resolve(p, "x")]);
    }
  });
});

describe("sys/fs is node:fs", () => {
  const names = [
    "file",
    "latin",
    "big",
    "empty",
    "sub",
    "link",
    "link2",
    "dangling",
    "outside",
    "fifo",
    "missing",
    "file/x",
  ];
  test("statSync, lstatSync, fstatSync, existsSync (numbers and bigints)", () => {
    for (const n of names) {
      const p = `${dir}/${n}`;
      for (const o of [undefined, { bigint: true }] as const) {
        expect([n, plain(outcome(() => plain(sfs.statSync(p, o))) as object)]).toEqual([
          n,
          plain(outcome(() => plain(nfs.statSync(p, o))) as object),
        ]);
        expect([n, outcome(() => plain(sfs.lstatSync(p, o)))]).toEqual([n, outcome(() => plain(nfs.lstatSync(p, o)))]);
      }
      const none = (st: unknown) => st === undefined;
      expect([n, outcome(() => none(sfs.statSync(p, { throwIfNoEntry: false })))]).toEqual([
        n,
        outcome(() => none(nfs.statSync(p, { throwIfNoEntry: false }))),
      ]);
      expect([n, sfs.existsSync(p)]).toEqual([n, nfs.existsSync(p)]);
      const s = outcome(() => sfs.lstatSync(p, { throwIfNoEntry: false })) as { ok?: sfs.Stats };
      const t = outcome(() => nfs.lstatSync(p, { throwIfNoEntry: false })) as { ok?: nfs.Stats };
      expect([n, s.ok === undefined]).toEqual([n, t.ok === undefined]);
      if (s.ok && t.ok) expect([n, ...kinds(s.ok)]).toEqual([n, ...kinds(t.ok)]);
    }
    const fd = nfs.openSync(`${dir}/big`, "r");
    try {
      expect(plain(sfs.fstatSync(fd))).toEqual(plain(nfs.fstatSync(fd)));
      expect(plain(sfs.fstatSync(fd, { bigint: true }))).toEqual(plain(nfs.fstatSync(fd, { bigint: true })));
    } finally {
      nfs.closeSync(fd);
    }
    expect(outcome(() => sfs.fstatSync(987654))).toEqual(outcome(() => nfs.fstatSync(987654)));
  });

  test("readFileSync: Buffer, latin1, utf8, /proc files, failures", () => {
    for (const n of ["file", "latin", "big", "empty", "link", "sub", "missing", "dangling"]) {
      const p = `${dir}/${n}`;
      expect([n, outcome(() => sfs.readFileSync(p))]).toEqual([n, outcome(() => nfs.readFileSync(p))]);
      expect([n, outcome(() => sfs.readFileSync(p, "latin1"))]).toEqual([
        n,
        outcome(() => nfs.readFileSync(p, "latin1")),
      ]);
      expect([n, outcome(() => sfs.readFileSync(p, { encoding: "utf8" }))]).toEqual([
        n,
        outcome(() => nfs.readFileSync(p, "utf8")),
      ]);
    }
    expect(Buffer.isBuffer(sfs.readFileSync(`${dir}/file`))).toBe(true);
    for (const p of ["/proc/version", "/proc/self/cmdline", "/proc/self/mountinfo", "/proc/self/limits"])
      expect([p, sfs.readFileSync(p, "latin1")]).toEqual([p, nfs.readFileSync(p, "latin1")]);
    // from an fd: from its offset on, the fd left open
    const fd = nfs.openSync(`${dir}/file`, "r");
    try {
      nfs.readSync(fd, Buffer.alloc(2), 0, 2, null);
      expect(sfs.readFileSync(fd, "utf8")).toBe("llo\nwörld\n");
      expect(nfs.fstatSync(fd).isFile()).toBe(true);
    } finally {
      nfs.closeSync(fd);
    }
  });

  test("readdirSync: names in the same order, Dirent kinds, failures", () => {
    for (const n of ["", "sub", "sub/deeper", "file", "missing", "outside"]) {
      const p = n ? `${dir}/${n}` : dir;
      expect([n, outcome(() => sfs.readdirSync(p))]).toEqual([n, outcome(() => nfs.readdirSync(p))]);
    }
    const a = sfs.readdirSync(dir, { withFileTypes: true }).map((d) => [d.name, ...kinds(d)]);
    const b = nfs.readdirSync(dir, { withFileTypes: true }).map((d) => [d.name, ...kinds(d)]);
    expect(a).toEqual(b);
    expect(sfs.readdirSync(`${dir}/sub`).length).toBe(601);
  });

  test("readlinkSync and realpathSync", () => {
    for (const n of ["link", "link2", "dangling", "outside", "file", "missing", "sub/../link", "outside/passwd"]) {
      const p = `${dir}/${n}`;
      expect([n, outcome(() => sfs.readlinkSync(p))]).toEqual([n, outcome(() => nfs.readlinkSync(p))]);
      expect([n, outcome(() => sfs.realpathSync(p))]).toEqual([n, outcome(() => nfs.realpathSync(p))]);
    }
    for (const p of ["/proc/self/ns/net", "/proc/self/exe", "/"]) {
      expect([p, outcome(() => sfs.readlinkSync(p))]).toEqual([p, outcome(() => nfs.readlinkSync(p))]);
      expect([p, outcome(() => sfs.realpathSync(p))]).toEqual([p, outcome(() => nfs.realpathSync(p))]);
    }
  });

  test("openSync adds O_CLOEXEC as node:fs does; read, write, pread, pwrite, close", () => {
    const flagsOf = (fd: number) => nfs.readFileSync(`/proc/self/fdinfo/${fd}`, "latin1").split("\n")[1];
    for (const [f, m] of [
      ["r", undefined],
      ["a", 0o600],
      [sfs.constants.O_RDWR | sfs.constants.O_CREAT, 0o640],
    ] as const) {
      const p = `${dir}/open-${String(f)}`;
      nfs.writeFileSync(p, "");
      const a = sfs.openSync(p, f, m);
      const fa = flagsOf(a);
      sfs.closeSync(a);
      if (f !== "r") nfs.rmSync(p, { force: true });
      const b = nfs.openSync(p, f, m);
      const fb = flagsOf(b);
      nfs.closeSync(b);
      expect([f, fa]).toEqual([f, fb]);
      if (f !== "r")
        expect((nfs.statSync(p).mode & 0o777).toString(8)).toBe((m ?? 0o666 & ~process.umask()).toString(8));
    }
    expect(outcome(() => sfs.openSync(`${dir}/missing`, "r"))).toEqual(
      outcome(() => nfs.openSync(`${dir}/missing`, "r"))
    );
    expect(outcome(() => sfs.openSync(`${dir}/file`, "wx"))).toEqual(outcome(() => nfs.openSync(`${dir}/file`, "wx")));
    expect(outcome(() => sfs.closeSync(987654))).toEqual(outcome(() => nfs.closeSync(987654)));

    const fd = sfs.openSync(`${dir}/rw`, "w+");
    try {
      expect(sfs.writeSync(fd, "héllo")).toBe(6);
      expect(sfs.writeSync(fd, new Uint8Array([1, 2, 3, 4]), 1, 2)).toBe(2);
      expect(sfs.writeSync(fd, new Uint8Array([9]), 0, 1, 0)).toBe(1);
      const b = Buffer.alloc(16);
      expect(sfs.readSync(fd, b, 0, 16, 0)).toBe(8);
      expect([...b.subarray(0, 8)]).toEqual([9, ...Buffer.from("éllo"), 2, 3]);
      expect(sfs.readSync(fd, b, 0, 16, null)).toBe(0);
    } finally {
      sfs.closeSync(fd);
    }
  });

  test("writeFileSync, appendFileSync: flags and modes", () => {
    const p = `${dir}/w`;
    sfs.writeFileSync(p, "one", { mode: 0o600 });
    sfs.appendFileSync(p, Buffer.from("two"));
    sfs.appendFileSync(p, "three");
    expect(nfs.readFileSync(p, "utf8")).toBe("onetwothree");
    expect(nfs.statSync(p).mode & 0o777).toBe(0o600);
    sfs.writeFileSync(p, "x");
    expect(nfs.readFileSync(p, "utf8")).toBe("x");
    expect(outcome(() => sfs.writeFileSync(p, "y", { flag: "wx", mode: 0o600 }))).toEqual(
      outcome(() => nfs.writeFileSync(p, "y", { flag: "wx", mode: 0o600 }))
    );
    expect(outcome(() => sfs.writeFileSync(`${dir}/missing/x`, "y"))).toEqual(
      outcome(() => nfs.writeFileSync(`${dir}/missing/x`, "y"))
    );
  });

  test("mkdirSync, mkdtempSync, renameSync, unlinkSync, rmdirSync, rmSync", () => {
    expect(sfs.mkdirSync(`${dir}/m1/a/b`, { recursive: true })).toBe(`${dir}/m1`);
    expect(nfs.mkdirSync(`${dir}/m2/a/b`, { recursive: true })).toBe(`${dir}/m2`);
    expect(sfs.mkdirSync(`${dir}/m1/a/b`, { recursive: true })).toBe(
      nfs.mkdirSync(`${dir}/m2/a/b`, { recursive: true })
    );
    expect(outcome(() => sfs.mkdirSync(`${dir}/m1`))).toEqual(outcome(() => nfs.mkdirSync(`${dir}/m1`)));
    expect(outcome(() => sfs.mkdirSync(`${dir}/file/x`, { recursive: true }))).toEqual(
      outcome(() => nfs.mkdirSync(`${dir}/file/x`, { recursive: true }))
    );
    sfs.mkdirSync(`${dir}/m3`, 0o700);
    expect(nfs.statSync(`${dir}/m3`).mode & 0o777).toBe(0o700);

    const t = sfs.mkdtempSync(`${dir}/tmp-`);
    expect(t).toMatch(new RegExp(`^${dir}/tmp-[A-Za-z0-9]{6}$`));
    expect(nfs.statSync(t).mode & 0o777).toBe(0o700);
    expect(sfs.mkdtempSync(`${dir}/tmp-`)).not.toBe(t);

    nfs.writeFileSync(`${t}/a`, "a");
    sfs.renameSync(`${t}/a`, `${t}/b`);
    expect(nfs.readdirSync(t)).toEqual(["b"]);
    expect(outcome(() => sfs.renameSync(`${t}/a`, `${t}/c`))).toEqual(
      outcome(() => nfs.renameSync(`${t}/a`, `${t}/c`))
    );
    sfs.unlinkSync(`${t}/b`);
    expect(outcome(() => sfs.unlinkSync(`${t}/b`))).toEqual(outcome(() => nfs.unlinkSync(`${t}/b`)));
    sfs.rmdirSync(t);
    expect(nfs.existsSync(t)).toBe(false);

    // rm -r: a symlink to a directory outside goes, the directory it names stays
    const keep = nfs.mkdtempSync(`${dir}/keep-`);
    nfs.writeFileSync(`${keep}/precious`, "p");
    nfs.mkdirSync(`${dir}/tree/a/b`, { recursive: true });
    nfs.writeFileSync(`${dir}/tree/a/b/f`, "f");
    nfs.symlinkSync(keep, `${dir}/tree/a/to-keep`);
    sfs.rmSync(`${dir}/tree`, { recursive: true, force: true });
    expect(nfs.existsSync(`${dir}/tree`)).toBe(false);
    expect(nfs.readFileSync(`${keep}/precious`, "utf8")).toBe("p");
    sfs.rmSync(`${dir}/tree`, { recursive: true, force: true });
    expect((outcome(() => sfs.rmSync(`${dir}/tree`)) as { code: string }).code).toBe("ENOENT");
    expect((outcome(() => sfs.rmSync(keep)) as { code: string }).code).toBeDefined();
  });

  test("a path with a NUL byte is refused, as node:fs refuses it, not cut short", () => {
    for (const p of [`${dir}/file\0/x`, `${dir}\0`]) {
      for (const [a, b] of [
        [() => sfs.statSync(p), () => nfs.statSync(p)],
        [() => sfs.openSync(p, "w"), () => nfs.openSync(p, "w")],
        [() => sfs.readdirSync(p), () => nfs.readdirSync(p)],
        [() => sfs.mkdirSync(p), () => nfs.mkdirSync(p)],
        [() => sfs.existsSync(p), () => nfs.existsSync(p)],
      ] as const)
        expect(outcome(a)).toEqual(outcome(b));
    }
    expect(nfs.existsSync(`${dir}/file\0`)).toBe(false);
  });

  test("symlink, link, chmod, chown, utimes, ftruncate, fsync", () => {
    sfs.symlinkSync("file", `${dir}/s1`);
    expect(nfs.readlinkSync(`${dir}/s1`)).toBe("file");
    sfs.linkSync(`${dir}/file`, `${dir}/h1`);
    expect(nfs.statSync(`${dir}/h1`).ino).toBe(nfs.statSync(`${dir}/file`).ino);
    expect(outcome(() => sfs.linkSync(`${dir}/file`, `${dir}/h1`))).toEqual(
      outcome(() => nfs.linkSync(`${dir}/file`, `${dir}/h1`))
    );
    sfs.chmodSync(`${dir}/h1`, 0o604);
    expect(nfs.statSync(`${dir}/h1`).mode & 0o777).toBe(0o604);
    sfs.chownSync(`${dir}/h1`, 1234, 5678);
    expect([nfs.statSync(`${dir}/h1`).uid, nfs.statSync(`${dir}/h1`).gid]).toEqual([1234, 5678]);
    sfs.lchownSync(`${dir}/s1`, 4321, 8765);
    expect([nfs.lstatSync(`${dir}/s1`).uid, nfs.statSync(`${dir}/s1`).uid]).toEqual([4321, 1234]);
    sfs.utimesSync(`${dir}/h1`, 1000.25, 2000.5);
    nfs.writeFileSync(`${dir}/h2`, "");
    nfs.utimesSync(`${dir}/h2`, 1000.25, 2000.5);
    const [a, b] = [nfs.statSync(`${dir}/h1`, { bigint: true }), nfs.statSync(`${dir}/h2`, { bigint: true })];
    expect([a.atimeNs, a.mtimeNs]).toEqual([b.atimeNs, b.mtimeNs]);
    sfs.lutimesSync(`${dir}/s1`, new Date(3000000), new Date(4000000));
    expect(nfs.lstatSync(`${dir}/s1`).mtimeMs).toBe(4000000);
    const fd = sfs.openSync(`${dir}/h1`, "r+");
    try {
      sfs.fchmodSync(fd, 0o600);
      sfs.fchownSync(fd, 0, 0);
      sfs.ftruncateSync(fd, 3);
      sfs.futimesSync(fd, 5, 6);
      sfs.fsyncSync(fd);
      const s = nfs.fstatSync(fd);
      expect([s.mode & 0o777, s.uid, s.size, s.mtimeMs]).toEqual([0o600, 0, 3, 6000]);
    } finally {
      sfs.closeSync(fd);
    }
  });

  test("isTerminal answers as node:tty's isatty: a pty's master, a file, /dev/null, a closed fd", () => {
    const tty = require("node:tty") as typeof import("node:tty");
    const fds: number[] = [];
    try {
      const master = nfs.openSync("/dev/ptmx", nfs.constants.O_RDWR | nfs.constants.O_NOCTTY);
      fds.push(master);
      fds.push(nfs.openSync(`${dir}/file`, "r"), nfs.openSync("/dev/null", "r"));
      const closed = nfs.openSync("/dev/null", "r");
      nfs.closeSync(closed);
      const seen = [...fds, closed].map((fd) => [sfs.isTerminal(fd), tty.isatty(fd)]);
      for (const [ours, node] of seen) expect(ours).toBe(node);
      // the master is a terminal, the file and /dev/null are not: the comparison is not all-false
      expect(seen.map(([ours]) => ours)).toEqual([true, false, false, false]);
    } finally {
      for (const fd of fds) nfs.closeSync(fd);
    }
  });
});

// A call given buffers by address only (`syscall(NR.rename, addr(cstr(a)), addr(cstr(b)))`) holds
// nothing of them: unless addr() keeps them, a collection reuses their bytes before the kernel
// reads them. It was a dump's commit failing now and then with "cannot move fdinfo-2.img ...:
// ENOENT", the file and both directories in place.
describe("buffers given to the kernel by address", () => {
  test("a C string whose address was taken keeps its bytes through a collection and new allocations", () => {
    const s = "/proc/self/fd/11/fdinfo-2.img";
    const lost: string[] = [];
    for (let round = 0; round < 20; round++) {
      const p = addr(cstr(s));
      for (let i = 0; i < 8; i++) addr(new Uint8Array(8)); // a call's other arguments
      Bun.gc(true);
      const churn: Uint8Array[] = [];
      for (let i = 0; i < 20000; i++) churn.push(new Uint8Array(s.length + 1).fill(0x5a));
      const got = new TextDecoder().decode(new Uint8Array(toArrayBuffer(p as unknown as Pointer, 0, s.length)));
      if (got !== s) lost.push(got);
    }
    expect(lost).toEqual([]);
  });

  test("renames back and forth under allocation all go where they were told (none ENOENT or EXDEV)", () => {
    const d = nfs.mkdtempSync(`${dir}/gc-`);
    nfs.mkdirSync(`${d}/aaaaaaaaaa`);
    nfs.mkdirSync(`${d}/bbbbbbbbbb`);
    nfs.writeFileSync(`${d}/aaaaaaaaaa/f`, "x");
    const failed: string[] = [];
    let churn: Uint8Array[] = [];
    for (let i = 0; i < 150000 && failed.length < 3; i++) {
      const [x, y] = i % 2 ? ["bbbbbbbbbb", "aaaaaaaaaa"] : ["aaaaaaaaaa", "bbbbbbbbbb"];
      try {
        sfs.renameSync(`${d}/${x}/f`, `${d}/${y}/f`);
      } catch (e) {
        failed.push(`${i}: ${(e as Error).message}`);
        i--;
      }
      if (i % 7 === 0) churn.push(new Uint8Array(40));
      if (churn.length > 1000) churn = [];
    }
    expect(failed).toEqual([]);
  });
});
