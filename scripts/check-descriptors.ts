// The descriptors the generated schemas build from their precomputed graphs (src/images/embed.ts
// graphFile) must be protobuf-es's own: for every generated file, the DescFile it exports is
// compared, object by object, with the one createFileRegistry builds from the same
// FileDescriptorProto. Run by scripts/build.ts after `buf generate` (a difference fails the build)
// and by test/descriptors.test.ts. `bun scripts/check-descriptors.ts`: prints the differences.
import { createFileRegistry, type DescFile } from "@bufbuild/protobuf";
import type { FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import { readdirSync } from "node:fs";
import { join } from "node:path";

const GEN = join(import.meta.dir, "../src/images/gen");

/** protobuf-es's DescFile for the proto of `file`, its dependencies being file's (the same objects). */
function registryFile(file: DescFile): DescFile {
  const p = file.proto as FileDescriptorProto;
  const deps = file.dependencies;
  const f = createFileRegistry(p, (name) => deps.find((d) => d.proto.name === name)).getFile(p.name);
  if (!f) throw new Error(`${p.name} did not register`);
  return f;
}

const isDesc = (v: unknown): v is { kind: string } =>
  typeof v === "object" && v !== null && typeof (v as any).kind === "string" && "proto" in (v as any);

/** Differences between two descriptor graphs (empty: the same). */
export function compareDescFiles(a: DescFile, b: DescFile): string[] {
  const out: string[] = [];
  const seen = new Map<object, object>();
  const same = (x: unknown, y: unknown, path: string, owner?: [object, object]) => {
    if (out.length > 20) return;
    if (x === y) return;
    if (typeof x !== typeof y) {
      out.push(`${path}: ${typeof x} vs ${typeof y}`);
      return;
    }
    if (typeof x === "function") {
      if (path.endsWith(".toString"))
        same(String((x as Function).call(owner![0])), String((y as Function).call(owner![1])), `${path}()`);
      else same((x as Function)(), (y as Function)(), `${path}()`);
      return;
    }
    if (typeof x !== "object" || x === null || y === null) {
      if (!Object.is(x, y)) out.push(`${path}: ${String(x)} vs ${String(y)}`);
      return;
    }
    if (x instanceof Uint8Array || y instanceof Uint8Array) {
      if (
        !(x instanceof Uint8Array && y instanceof Uint8Array) ||
        x.length !== y.length ||
        x.some((v, i) => v !== y[i])
      )
        out.push(`${path}: bytes differ`);
      return;
    }
    const ox = x as object,
      oy = y as object;
    const mapped = seen.get(ox);
    if (mapped) {
      if (mapped !== oy) out.push(`${path}: points to another object`);
      return;
    }
    seen.set(ox, oy);
    if (Array.isArray(x) !== Array.isArray(y)) {
      out.push(`${path}: array vs object`);
      return;
    }
    // `proto` of graphFile's descriptors is a getter on their prototype (embed.ts): a property all the same.
    // A message's fields, field, oneofs and members are built when first read (embed.ts): read first.
    const names = (o: object) => {
      if (isDesc(o) && o.kind === "message") void (o as unknown as { fields: unknown }).fields;
      const k = Object.getOwnPropertyNames(o);
      if (isDesc(o) && !k.includes("proto")) k.push("proto");
      return k.sort();
    };
    const kx = names(x as object),
      ky = names(y as object);
    if (kx.join() !== ky.join()) {
      out.push(`${path}: properties [${kx}] vs [${ky}]`);
      return;
    }
    for (const k of kx) {
      const vx = (x as any)[k],
        vy = (y as any)[k];
      // the FileDescriptorProto parts are the same objects on both sides
      if (k === "proto" && isDesc(x)) {
        if (vx !== vy) out.push(`${path}.proto: another object`);
        continue;
      }
      same(vx, vy, `${path}.${k}`, [ox, oy]);
    }
  };
  same(a, b, a.name);
  return out;
}

/** Every generated file's differences, by file name. */
export async function checkGenerated(): Promise<Map<string, string[]>> {
  const bad = new Map<string, string[]>();
  for (const name of readdirSync(GEN)
    .filter((f) => f.endsWith("_pb.ts"))
    .sort()) {
    const mod = await import(join(GEN, name));
    for (const v of Object.values(mod)) {
      if (!isDesc(v) || (v as any).kind !== "file") continue;
      const d = compareDescFiles(v as DescFile, registryFile(v as DescFile));
      if (d.length) bad.set(name, d);
    }
  }
  return bad;
}

if (import.meta.main) {
  const bad = await checkGenerated();
  for (const [f, d] of bad) console.error(`${f}:\n  ${d.join("\n  ")}`);
  if (bad.size) process.exit(1);
  console.error("descriptors: every generated file's graph equals protobuf-es's");
}
