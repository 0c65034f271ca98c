// The layering ARCHITECTURE promises, checked on the source tree (no build needed): bun:ffi only in
// src/sys, the generated protobuf modules only through src/images, no import cycle between src/'s
// top-level folders except the two front doors (cli and rpc), and no comment naming a path outside
// the repository or a repository path that is gone, no `void x;` workaround, no export nothing imports,
// no `any` in hand-written src/ (the image layer's fields are typed, so a misspelled one fails to compile).
import { test, expect } from "bun:test";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import ts from "typescript";
import { unusedExports } from "../scripts/unused-exports";

const ROOT = resolve(import.meta.dir, "..");
const SRC = join(ROOT, "src");

function walk(dir: string, out: string[] = []): string[] {
  for (const n of readdirSync(dir)) {
    const p = join(dir, n);
    if (statSync(p).isDirectory()) walk(p, out);
    else out.push(p);
  }
  return out;
}

const rel = (p: string) => relative(ROOT, p);
const generated = (p: string) => rel(p).startsWith("src/images/gen/");
const tsFiles = walk(SRC).filter((p) => p.endsWith(".ts"));
const handWritten = tsFiles.filter((p) => !generated(p));
const transpiler = new Bun.Transpiler({ loader: "ts" });

/** Every module a file imports (static, dynamic, re-exports; type-only imports are left out, as
 *  they load nothing), as written. */
function specifiers(file: string): string[] {
  const text = readFileSync(file, "utf8").replace(/^#!.*/, "");
  return transpiler.scanImports(text).map((i) => i.path);
}

/** A relative specifier resolved to a repository file, or null (a package or bun:*). */
function resolveSpec(from: string, spec: string): string | null {
  if (!spec.startsWith(".")) return null;
  const b = resolve(dirname(from), spec);
  for (const c of [b, b + ".ts", join(b, "index.ts")]) if (existsSync(c) && statSync(c).isFile()) return c;
  return null;
}

/** src/X/... -> X; src/log.ts -> log (a top-level file is a node of its own) */
function topOf(file: string): string {
  const parts = relative(SRC, file).split("/");
  return parts.length > 1 ? parts[0] : parts[0].replace(/\.ts$/, "");
}

test("bun:ffi is imported only in src/sys", () => {
  const outside = handWritten.filter((f) => !rel(f).startsWith("src/sys/"));
  const bad = outside.filter((f) => specifiers(f).includes("bun:ffi") || readFileSync(f, "utf8").includes("bun:ffi"));
  expect(bad.map(rel)).toEqual([]);
});

test("the generated modules (src/images/gen) are imported only from src/images", () => {
  const bad: string[] = [];
  for (const f of handWritten) {
    if (rel(f).startsWith("src/images/")) continue;
    for (const s of specifiers(f)) {
      const r = resolveSpec(f, s);
      if ((r && generated(r)) || /images\/gen\//.test(s)) bad.push(`${rel(f)} imports ${s}`);
    }
  }
  expect(bad).toEqual([]);
});

/** Strongly connected components (more than one node) of a graph, by Tarjan's algorithm. */
function cycles(nodes: string[], next: (n: string) => Iterable<string>): string[][] {
  let counter = 0;
  const index = new Map<string, number>(),
    low = new Map<string, number>(),
    stack: string[] = [],
    on = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string) => {
    index.set(v, counter);
    low.set(v, counter);
    counter++;
    stack.push(v);
    on.add(v);
    for (const w of next(v)) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) !== index.get(v)) return;
    const c: string[] = [];
    let w: string;
    do {
      w = stack.pop()!;
      on.delete(w);
      c.push(w);
    } while (w !== v);
    if (c.length > 1) out.push(c.sort());
  };
  for (const n of nodes) if (!index.has(n)) visit(n);
  return out;
}

test("no import cycle between src/'s folders but the two front doors (cli, rpc); nothing below imports them", () => {
  // folder -> folder -> the file imports that make the edge (for the failure message)
  const edges = new Map<string, Map<string, string[]>>();
  const fileEdges = new Map<string, string[]>();
  for (const f of handWritten) {
    const targets: string[] = [];
    for (const s of specifiers(f)) {
      const r = resolveSpec(f, s);
      if (!r || !r.startsWith(SRC + "/")) continue;
      targets.push(r);
      const a = topOf(f),
        b = topOf(r);
      if (a === b) continue;
      if (!edges.has(a)) edges.set(a, new Map());
      const m = edges.get(a)!;
      if (!m.has(b)) m.set(b, []);
      m.get(b)!.push(`${rel(f)} -> ${rel(r)}`);
    }
    fileEdges.set(f, targets);
  }
  const folders = [...new Set(handWritten.map(topOf))];
  const found = cycles(folders, (n) => edges.get(n)?.keys() ?? []);
  const explain = (c: string[]) =>
    c.flatMap((a) => c.filter((b) => b !== a).flatMap((b) => edges.get(a)?.get(b) ?? [])).join("\n");
  const unexpected = found.filter((c) => c.join(" ") !== "cli rpc");
  expect(unexpected.map((c) => `${c.join(" <-> ")}:\n${explain(c)}`)).toEqual([]);
  // the front doors are the top: only they and main.ts import them
  const upward: string[] = [];
  for (const [a, m] of edges)
    for (const b of ["cli", "rpc"]) if (m.has(b) && !["cli", "rpc", "main"].includes(a)) upward.push(...m.get(b)!);
  expect(upward).toEqual([]);
  // the cycles fixed before must stay gone (named so a failure says which)
  for (const [a, b] of [
    ["codec", "resources"],
    ["codec", "restore"],
    ["ptrace", "restore"],
    ["net", "resources"],
    ["net", "dump"],
    ["net", "restore"],
    ["net", "codec"],
    ["cli", "net"],
  ])
    expect(found.some((c) => c.includes(a) && c.includes(b))).toBe(false);
  // file level: a cycle only inside a folder, never across two
  const crossing = cycles(handWritten, (n) => fileEdges.get(n) ?? [])
    .filter((c) => new Set(c.map(topOf)).size > 1)
    .map((c) => c.map(rel).join(" "));
  expect(crossing).toEqual([]);
});

test("no source comment names a path outside the repository, or a repository path that does not exist", () => {
  const outside = /\.\.\/shared\b|\/work\/|shared\/(design|tools)\/|\/home\/|\.\.\/\.\.\/\.\.\//;
  const bad: string[] = [];
  const files = walk(SRC).filter((p) => !generated(p) && /\.(ts|proto)$/.test(p));
  for (const f of files) {
    const lines = readFileSync(f, "utf8").split("\n");
    lines.forEach((line, i) => {
      if (outside.test(line)) bad.push(`${rel(f)}:${i + 1}: ${line.trim()}`);
      // "src/x/y.ts", "test/z.test.ts", or a src-relative "restore/task.ts" must name a file that exists
      for (const m of line.matchAll(/(?<![\w./-])((?:src|test|scripts|asm)\/[\w./-]+\.(?:ts|c|md|proto|sh|py))\b/g))
        if (!existsSync(join(ROOT, m[1]))) bad.push(`${rel(f)}:${i + 1}: ${m[1]} does not exist`);
      const dirs = "check|cli|codec|dump|images|migrate|net|ptrace|resources|restore|rpc|sys";
      for (const m of line.matchAll(new RegExp(`(?<![\\w./-])((?:${dirs})\\/[\\w-]+\\.ts)\\b`, "g")))
        if (!existsSync(join(SRC, m[1]))) bad.push(`${rel(f)}:${i + 1}: src/${m[1]} does not exist`);
    });
  }
  expect(bad).toEqual([]);
});

test("no `void name;` statement silences an unused variable (delete the variable, or sys/addr keepAlive)", () => {
  const files = [...handWritten, ...["test", "scripts"].flatMap((d) => walk(join(ROOT, d)))].filter((p) =>
    p.endsWith(".ts")
  );
  const bad: string[] = [];
  for (const f of files)
    readFileSync(f, "utf8")
      .split("\n")
      .forEach((line, i) => {
        if (/(^|[;{]\s*)void [A-Za-z_$][\w$.]*;/.test(line.replace(/^\s+/, "")))
          bad.push(`${rel(f)}:${i + 1}: ${line.trim()}`);
      });
  expect(bad).toEqual([]);
});

test("every export of src/ is used by another file, every module imported (scripts/unused-exports.ts)", () => {
  expect(unusedExports(ROOT)).toEqual([]);
}, 120_000);

test("no `any` type in hand-written src/ (a precise type, a generated message type, or unknown with checks)", () => {
  const bad: string[] = [];
  for (const f of handWritten) {
    const sf = ts.createSourceFile(f, readFileSync(f, "utf8"), ts.ScriptTarget.Latest, true);
    const visit = (n: ts.Node) => {
      if (n.kind === ts.SyntaxKind.AnyKeyword)
        bad.push(`${rel(f)}:${sf.getLineAndCharacterOfPosition(n.getStart(sf)).line + 1}: ${n.parent.getText(sf)}`);
      ts.forEachChild(n, visit);
    };
    visit(sf);
  }
  expect(bad).toEqual([]);
});

// src/sys/fs.ts and src/sys/path.ts stand in for them: loading the runtime's modules is start-up
// time of every command and every page Worker (sys/fs.ts says how much)
test("node:fs and node:path are not imported in src (only sys/fs.ts loads node:fs, for embedded files)", () => {
  const bad = tsFiles.filter((f) => {
    const specs = specifiers(f);
    return rel(f) !== "src/sys/fs.ts" && (specs.includes("node:fs") || specs.includes("node:path"));
  });
  expect(bad.map(rel)).toEqual([]);
  expect(readFileSync(join(SRC, "sys/fs.ts"), "utf8")).not.toMatch(/^import .* from "node:/m);
});
