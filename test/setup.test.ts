// The install a newcomer runs must be reproducible: `npm ci` resolves nothing beyond the lock, so
// every dependency is pinned to one exact version, the lock's root record says the same, and the
// build does not depend on packages' install scripts (scripts/bun finds the platform binary).
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const ROOT = join(import.meta.dir, "..");
const EXACT = /^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/;
const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8"));

for (const section of ["dependencies", "devDependencies"] as const) {
  test(`package.json ${section}: exact versions, the same in the lock`, () => {
    const deps: Record<string, string> = pkg[section] ?? {};
    const loose = Object.entries(deps)
      .filter(([, v]) => !EXACT.test(v))
      .map(([k, v]) => `${k}@${v}`);
    expect(loose).toEqual([]);
    expect(lock.packages[""][section] ?? {}).toEqual(deps);
    for (const [name, version] of Object.entries(deps))
      expect(lock.packages[`node_modules/${name}`]?.version).toBe(version);
  });
}

test("the build runs under the pinned Bun without install scripts", () => {
  const r = Bun.spawnSync(["sh", join(ROOT, "scripts/bun"), "--version"], { stdout: "pipe", stderr: "pipe" });
  expect(r.exitCode).toBe(0);
  expect(r.stdout.toString().trim()).toBe(pkg.devDependencies.bun);
  for (const s of ["build", "demo", "bench"]) expect(pkg.scripts[s]).toContain("sh scripts/bun ");
});

test("the formatter (Biome, pinned) runs from its platform binary without Node or install scripts", () => {
  const r = Bun.spawnSync(["sh", join(ROOT, "scripts/biome"), "--version"], { stdout: "pipe", stderr: "pipe" });
  expect(r.exitCode).toBe(0);
  expect(r.stdout.toString().trim()).toBe(`Version: ${pkg.devDependencies["@biomejs/biome"]}`);
  expect(pkg.scripts.format).toBe("sh scripts/biome format --write .");
  expect(pkg.scripts["format:check"]).toBe("sh scripts/biome format .");
});
