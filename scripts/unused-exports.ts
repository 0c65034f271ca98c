// Lists the exports of src/ (generated code aside) that no other file uses, neither another module
// of src/ nor a test nor a script, and the modules of src/ nothing imports. Such an export is dead code, or a name that should not be
// exported (tsc's noUnusedLocals then finds it if nothing in its own file uses it either). Uses the
// TypeScript compiler API on tsconfig.json's program; prints "file:line name" lines, exits 1 if any.
//   sh scripts/bun scripts/unused-exports.ts
import ts from "typescript";
import { dirname, join, relative, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "..");
/** what the build compiles (scripts/build.ts): modules nothing needs to import */
const ENTRY_POINTS = ["src/main.ts", "src/codec/worker.ts"];

export function unusedExports(root = ROOT): string[] {
  const configPath = join(root, "tsconfig.json");
  const config = ts.readConfigFile(configPath, ts.sys.readFile);
  const parsed = ts.parseJsonConfigFileContent(config.config, ts.sys, dirname(configPath));
  const program = ts.createProgram({ rootNames: parsed.fileNames, options: parsed.options });
  const checker = program.getTypeChecker();
  const ours = (f: ts.SourceFile) =>
    !f.isDeclarationFile && f.fileName.startsWith(root + "/") && !f.fileName.includes("/node_modules/");
  const candidate = (f: ts.SourceFile) =>
    ours(f) &&
    relative(root, f.fileName).startsWith("src/") &&
    !relative(root, f.fileName).startsWith("src/images/gen/");

  // the names worth resolving: those some candidate module exports (the checker is asked about
  // these identifiers only, which keeps the run short)
  const names = new Set<string>();
  for (const f of program.getSourceFiles()) {
    const mod = candidate(f) ? checker.getSymbolAtLocation(f) : undefined;
    if (mod) for (const e of checker.getExportsOfModule(mod)) names.add(e.name);
  }
  // every symbol an identifier of another file refers to, with each alias on the way
  const usedFrom = new Map<ts.Symbol, Set<string>>();
  const mark = (s: ts.Symbol, file: string) => {
    for (let i = 0; i < 16; i++) {
      if (!usedFrom.has(s)) usedFrom.set(s, new Set());
      usedFrom.get(s)!.add(file);
      if (!(s.flags & ts.SymbolFlags.Alias)) return;
      const next = checker.getImmediateAliasedSymbol(s);
      if (!next || next === s) return;
      s = next;
    }
  };
  for (const f of program.getSourceFiles()) {
    if (!ours(f)) continue;
    const visit = (n: ts.Node) => {
      if (ts.isIdentifier(n) && names.has(n.text)) {
        const s = checker.getSymbolAtLocation(n);
        if (s) mark(s, f.fileName);
        // { a, b } = await import("x"): the names bound from the module's namespace object
        if (ts.isIdentifier(n) && ts.isBindingElement(n.parent) && n.parent.name === n && !n.parent.propertyName) {
          const t = checker.getTypeAtLocation(n.parent.parent);
          const p = t.getProperty(n.text);
          if (p) mark(p, f.fileName);
        }
      }
      ts.forEachChild(n, visit);
    };
    visit(f);
  }

  // the modules some other file imports (statically, by import(), or by export ... from)
  const imported = new Set<string>();
  for (const f of program.getSourceFiles()) {
    if (!ours(f)) continue;
    const visit = (n: ts.Node) => {
      const spec =
        (ts.isImportDeclaration(n) || ts.isExportDeclaration(n)) && n.moduleSpecifier
          ? n.moduleSpecifier
          : ts.isCallExpression(n) && n.expression.kind === ts.SyntaxKind.ImportKeyword
            ? n.arguments[0]
            : undefined;
      const target = spec && checker.getSymbolAtLocation(spec)?.valueDeclaration?.getSourceFile();
      if (target && target !== f) imported.add(target.fileName);
      ts.forEachChild(n, visit);
    };
    visit(f);
  }

  const unused: string[] = [];
  for (const f of program.getSourceFiles()) {
    if (!candidate(f)) continue;
    if (!imported.has(f.fileName) && !ENTRY_POINTS.includes(relative(root, f.fileName))) {
      unused.push(`${relative(root, f.fileName)}:1 (the module: nothing imports it)`);
      continue;
    }
    const mod = checker.getSymbolAtLocation(f);
    if (!mod) continue;
    for (const e of checker.getExportsOfModule(mod)) {
      const decl = e.declarations?.[0];
      // re-exports (export * from / export { x } from) are judged where they are declared
      if (!decl || decl.getSourceFile() !== f) continue;
      const local = e.flags & ts.SymbolFlags.Alias ? e : (checker.getExportSymbolOfSymbol(e) ?? e);
      const users = new Set([...(usedFrom.get(e) ?? []), ...(usedFrom.get(local) ?? [])]);
      users.delete(f.fileName);
      if (users.size === 0) {
        const line = f.getLineAndCharacterOfPosition(decl.getStart()).line + 1;
        unused.push(`${relative(root, f.fileName)}:${line} ${e.name}`);
      }
    }
  }
  return unused.sort();
}

if (import.meta.main) {
  const list = unusedExports();
  for (const l of list) console.log(l);
  console.error(`${list.length} export(s) or module(s) nothing else uses`);
  process.exit(list.length ? 1 : 0);
}
