// Each fd kind's state for one dump or one restore (FdKind<D, R>, src/resources/fdkind.ts) is
// made by its dumpBegin/restoreBegin, kept by the dump (FdKindsDump) or restore (TreeFiles) that
// runs it and handed to the kind's own hooks, typed by the kind. The @ts-expect-error lines make
// `tsc --noEmit` fail if a hook could see another type than its kind's state, or if a held
// object's key could be misspelled, again. No module of a dump or restore keeps such state at top level.
import { test, expect } from "bun:test";
import { readdirSync, readFileSync, statSync, type BigIntStats } from "node:fs";
import { join, relative, resolve } from "node:path";
import { FdKindsDump, FileTable } from "../src/resources/files";
import {
  ImageSink,
  TreeFiles,
  type FdKind,
  type DumpTree,
  type DumpOpts,
  type DumpCtx,
  type RestoreRun,
} from "../src/resources/fdkind";
import { FD_KINDS } from "../src/resources/kinds";
import { ttyKind } from "../src/resources/tty";
import { inetKind } from "../src/resources/inet";

interface Counted {
  seen: string[];
  ended?: string;
}

/** a kind that counts what its hooks see, in the state of one dump */
function countingKind(log: string[]): FdKind<Counted, { opened: number }> {
  return {
    name: "counting",
    type: 99,
    dumpBegin: () => ({ seen: [] }),
    match: (target, _st, _p, _o, _c, s) => {
      s.seen.push(`match ${target}`);
      return target === "x";
    },
    dump: (ctx, s) => {
      s.seen.push(`dump ${ctx.target}`);
      return 7;
    },
    dumpInventory: (s) => (s.seen.length ? { tcpClose: true } : {}),
    dumpRelease: (s, how) => {
      s.ended = how;
      log.push(`release ${how} after ${s.seen.join(",")}`);
    },
    dumpAbort: (s) => {
      log.push(`abort ${s.seen.length}`);
      throw new Error("counting: cleanup failed");
    },
    restoreBegin: () => ({ opened: 0 }),
    restore: (_ctx, _f, _fe, s) => ++s.opened,
  };
}

const tree = (): DumpTree => ({
  pids: [],
  files: new FileTable(),
  images: new ImageSink(),
  vpid: (p) => p,
  vpgid: (p) => p,
});
const st = {} as BigIntStats;

test("each dump has its own kind states; the hooks see their kind's state; a failing abort does not stop the others", () => {
  const log: string[] = [];
  const k = countingKind(log);
  const other: FdKind<{ n: number }> = {
    name: "other",
    type: 98,
    dumpBegin: () => ({ n: 1 }),
    match: () => false,
    dump: () => 0,
    restore: () => -1,
    dumpAbort: (s) => {
      log.push(`other abort ${s.n}`);
    },
  };
  const a = new FdKindsDump([k, other]),
    b = new FdKindsDump([k, other]);
  expect(() => a.stateOf(k)).toThrow(/before the dump's kinds began/);
  const opts: DumpOpts = { tree: [] };
  a.begin(tree(), opts);
  b.begin(tree(), opts);
  const found = a.find("x", st, "/proc/1/fd/3", opts);
  expect(found).toBe(k);
  expect(a.dump(found!, { target: "x" } as DumpCtx)).toBe(7);
  expect(a.stateOf(k).seen).toEqual(["match x", "dump x"]);
  expect(b.stateOf(k).seen).toEqual([]); // another dump's state is untouched
  expect(a.inventory()).toEqual({ tcpClose: true });
  expect(b.inventory()).toEqual({});
  a.release("running");
  expect(a.stateOf(k).ended).toBe("running");
  expect(b.stateOf(k).ended).toBeUndefined();
  b.abort(); // the counting kind's cleanup throws: the other kind's still runs
  expect(log).toEqual(["release running after match x,dump x", "abort 0", "other abort 1"]);
  expect(b.stateOf(other).n).toBe(1);
});

test("each restore has its own kind states (TreeFiles), typed by the kind", () => {
  const k = countingKind([]);
  const t1 = new TreeFiles(),
    t2 = new TreeFiles();
  const run = {} as RestoreRun;
  t1.beginKinds([k], run);
  t2.beginKinds([k], run);
  t1.kindState(k).opened++;
  expect(t1.kindState(k).opened).toBe(1);
  expect(t2.kindState(k).opened).toBe(0);
  // the real kinds: inet's restore state is its own per restore, tty has none
  t1.beginKinds(FD_KINDS, { tree: t1 } as RestoreRun);
  expect(t1.kindState(inetKind).inRepair.size).toBe(0);
  expect(t1.kindState(ttyKind)).toBeUndefined();
});

test("kind states and held keys are checked at compile time", () => {
  const k = countingKind([]);
  const d = new FdKindsDump([k]);
  d.begin(tree(), { tree: [] });
  const seen: string[] = d.stateOf(k).seen;
  expect(seen).toEqual([]);
  // @ts-expect-error a kind's dump state is its own type, not another's
  const wrong: { opened: number } = d.stateOf(k);
  expect(wrong).toBeDefined();
  // @ts-expect-error tty's dump state has no pty lists under other names (they left DumpOpts)
  const masters: Set<number> = ({ tree: [] } as DumpOpts).ptyMasters;
  expect(masters).toBeUndefined();
  const bad: FdKind<Counted> = {
    name: "bad",
    type: 97,
    // @ts-expect-error dumpBegin makes the kind's state, nothing else
    dumpBegin: () => ({ seen: 1 }),
    match: () => false,
    // @ts-expect-error a hook sees its kind's state: no field the state lacks
    dump: (_ctx, s) => s.opened,
    restore: () => -1,
  };
  expect(bad.name).toBe("bad");
  const t = new TreeFiles();
  t.taken.add("pipe:3:r");
  // @ts-expect-error a held object's key names a known kind of object
  t.taken.add("pipes:3:r");
  // @ts-expect-error a pipe end is r or w
  t.held.set("pipe:3:x", { pid: 1, fd: 3 });
  expect(t.taken.size).toBe(2);
});

/** module-level state the modules of a dump or restore may keep, and why it holds nothing of one
 *  dump or restore (anything else there belongs in its kind's state) */
const MODULE_STATE: Record<string, string> = {
  "src/resources/creds.ts lastCapCache": "the kernel's CAP_LAST_CAP",
  "src/resources/xsave.ts layout": "the CPU's XSAVE layout (CPUID)",
  "src/resources/threads.ts own": "criu-bun's own timer slack and I/O priority, which it does not change",
  "src/resources/memory.ts bpfSource":
    "the BPF VMA program and its vm_flags table checked on the running kernel (or smaps, once that failed): kernel facts",
  "src/net/pageserver.ts deadlineSec": "per socket fd, removed when that socket is closed",
  "src/net/pageserver.ts peerOf": "per socket fd, removed when that socket is closed",
  "src/net/pageserver.ts wireBytes": "a counter callers read as differences",
  "src/net/pageserver.ts coverageCache": "by real path and identity (dev, ino, size, mtime), checked at each use",
  "src/codec/incremental.ts parentRunsCache":
    "by real path and identity (dev, ino, size, mtime of the pagemap and pages files), checked at each use",
};
/** top-level sets and maps that are constants: nothing may change them */
const CONSTANT_TABLES = new Set([
  "src/resources/inet.ts CONNECTED",
  "src/resources/inet.ts INET_PROTO_NAMES",
  "src/resources/mounts.ts FSNAME",
  "src/resources/mounts.ts FRESH",
  "src/resources/memory.ts KERNEL_MAPPINGS",
]);

test("no module of a dump or restore keeps its state at top level (a second one in one criu-bun swrk would see it)", () => {
  const root = resolve(import.meta.dir, "..");
  const walk = (d: string): string[] =>
    readdirSync(d).flatMap((n) => (statSync(join(d, n)).isDirectory() ? walk(join(d, n)) : [join(d, n)]));
  const found: string[] = [];
  for (const top of ["resources", "net", "restore", "dump", "migrate"])
    for (const file of walk(join(root, "src", top)).filter((f) => f.endsWith(".ts"))) {
      const text = readFileSync(file, "utf8");
      const at = relative(root, file);
      const re = /^(?:export )?(?:let ([\w$]+)|const ([\w$]+)\s*(?::[^=\n]+)?=\s*new (?:Map|Set|WeakMap|WeakSet)\b)/gm;
      for (const m of text.matchAll(re)) {
        const key = `${at} ${m[1] ?? m[2]}`;
        if (m[2] && CONSTANT_TABLES.has(key)) {
          // a constant table stays one: never set, added to, deleted from or cleared
          expect(`${key}: ${new RegExp(`\\b${m[2]}\\.(set|add|delete|clear)\\(`).test(text)}`).toBe(`${key}: false`);
          continue;
        }
        if (!(key in MODULE_STATE)) found.push(key);
      }
    }
  expect(found).toEqual([]);
  // the list above names what is still there
  for (const key of [...Object.keys(MODULE_STATE), ...CONSTANT_TABLES]) {
    const [file, name] = key.split(" ");
    expect(readFileSync(join(root, file), "utf8")).toMatch(new RegExp(`^(export )?(let|const) ${name}\\b`, "m"));
  }
});
