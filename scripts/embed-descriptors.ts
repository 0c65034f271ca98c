// Build step after `buf generate`: the generated src/images/gen/*_pb.ts describe their .proto file
// with fileDesc("<base64>", [deps]). At load time that decodes the base64 with protobuf-es's own
// descriptor.proto schema, which must first be built from scratch ("boot"): together with the
// decoding about half of the descriptor cost of every criu-bun start.
//
// This step rewrites that call into embeddedFile(() => (<object literal>), [deps]) (src/images/embed.ts):
// the FileDescriptorProto fileDesc would have produced, written out as an object literal, so the
// descriptors are built straight from it. Imports that no field refers to (opts.proto, which only
// carries the (criu) field options) are dropped from the dependencies: the options stay in the
// descriptors as unknown fields, where getOption() reads them, and opts.proto (which needs the
// booted descriptor.proto) is loaded only by the code that formats crit JSON.
//
// The descriptors built from it are precomputed too: a third argument (a DescGraph, embed.ts) holds
// per field what createFileRegistry would compute at start-up, so start-up only makes the objects;
// scripts/check-descriptors.ts (run by the build) proves them equal to protobuf-es's own. The graph
// carries the names and numbers the objects need (its skeleton), so the object literal is written
// inside a function, evaluated only when a descriptor's `proto` is read (crit's JSON options).
// A dump or restore never reads it: about 1 ms of CPU per command less.
//
// A file this step does not recognise is left as protoc-gen-es wrote it (fileDesc still works).
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { DescEnum, DescField, DescFile, DescMessage } from "@bufbuild/protobuf";
import type { DescriptorProto, EnumDescriptorProto, FileDescriptorProto } from "@bufbuild/protobuf/wkt";

const CALL = /fileDesc\("([A-Za-z0-9+/=]*)"(?:, \[([\w, ]*)\])?\)/;

/** Rewrite every *_pb.ts in dir; returns the names of the files rewritten. */
export async function embedDescriptors(dir: string): Promise<string[]> {
  const done: string[] = [];
  for (const name of readdirSync(dir)
    .filter((f) => f.endsWith("_pb.ts"))
    .sort()) {
    const path = resolve(join(dir, name));
    const src = readFileSync(path, "utf8");
    const m = CALL.exec(src);
    if (!m) continue;
    const deps = (m[2] ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
    // only imports of sibling generated files (not descriptor.proto: opts.proto extends it)
    if (deps.some((d) => !new RegExp(`^import \\{ ${d} \\} from "\\./[\\w-]+_pb";$`, "m").test(src))) continue;
    const fileVar = /export const (file_\w+): GenFile = /.exec(src)?.[1];
    if (!fileVar) continue;
    const file: DescFile = (await import(path))[fileVar];
    if (file.dependencies.length !== deps.length)
      throw new Error(`${name}: ${deps.length} imports, ${file.dependencies.length} dependencies`);
    const used = referencedFiles(file);
    const keep = deps.filter((_, i) => used.has(file.dependencies[i]));
    const protos = new Map<object, string>();
    // embeddedFile() sets the dependencies
    const root = Object.assign(Object.create(Object.getPrototypeOf(file.proto)), file.proto, { dependency: [] });
    const body = literal(root, protos);
    // the descriptors themselves, precomputed (embed.ts graphFile); none for a file it cannot
    // describe (map fields, extensions, services: protobuf-es builds those at start-up)
    const graph = descGraph(file);
    // the FileDescriptorProto behind a function: built only when something reads a descriptor's
    // proto (crit's JSON reads the (criu) options there); a dump or restore never does
    let out = src.replace(
      CALL,
      () => `embeddedFile(() => (${body}), [${keep.join(", ")}]${graph ? `, ${graph}` : ""})`
    );
    // the shared prototypes (defaults of unset fields), declared before the file's descriptor
    const decls = [...protos].map(([p, id]) => `const ${id} = ${literal({ ...p }, protos)};\n`).join("");
    const at = out.search(/^\/\*\*\n \* Describes the file /m);
    if (at < 0) throw new Error(`${name}: no "Describes the file" comment to put the defaults before`);
    out = `${out.slice(0, at)}${decls}\n${out.slice(at)}`;
    for (const d of deps)
      if (!keep.includes(d)) out = out.replace(new RegExp(`^import \\{ ${d} \\} from "\\./[\\w-]+_pb";\\n`, "m"), "");
    // messageDesc/enumDesc from embed.ts: importing any value from @bufbuild/protobuf/codegenv2
    // would load its fileDesc, which boots descriptor.proto at once
    out = out.replace(/^import \{ ([\w, ]*) \} from "@bufbuild\/protobuf\/codegenv2";$/m, (_l, names: string) => {
      const rest = names.split(", ").filter((n) => n !== "fileDesc");
      if (rest.some((n) => n !== "messageDesc" && n !== "enumDesc"))
        throw new Error(`${name}: imports ${names} from codegenv2`);
      return `import { ${["embeddedFile", ...rest].join(", ")} } from "../embed";`;
    });
    writeFileSync(path, out);
    done.push(name);
  }
  return done;
}

/** The files whose messages or enums the fields of FILE use. */
function referencedFiles(file: DescFile): Set<DescFile> {
  const used = new Set<DescFile>();
  const visit = (m: DescMessage) => {
    for (const f of m.fields) {
      const t = f.message ?? f.enum;
      if (t && t.file !== file) used.add(t.file);
    }
    for (const n of m.nestedMessages) visit(n);
  };
  file.messages.forEach(visit);
  return used;
}

/**
 * A message as an object literal: its own properties (the fields that are set, the lists and
 * $typeName); the defaults of the unset proto2 fields come from a prototype like the one
 * protobuf-es gives a decoded message, so "is this field set" reads the same.
 */
function literal(v: unknown, protos: Map<object, string>): string {
  switch (typeof v) {
    case "string":
      return JSON.stringify(v);
    case "number":
    case "boolean":
      return String(v);
    case "bigint":
      return `${v}n`;
    case "object":
      break;
    default:
      throw new Error(`embed-descriptors: cannot write a ${typeof v}`);
  }
  if (v === null) throw new Error("embed-descriptors: null in a descriptor");
  if (v instanceof Uint8Array) return `new Uint8Array([${v.join(",")}])`;
  if (Array.isArray(v)) return `[${v.map((x) => literal(x, protos)).join(",")}]`;
  const parts: string[] = [];
  const proto = Object.getPrototypeOf(v);
  if (proto !== Object.prototype) {
    if (Object.getPrototypeOf(proto) !== Object.prototype)
      throw new Error("embed-descriptors: unexpected prototype chain");
    let id = protos.get(proto);
    if (!id) protos.set(proto, (id = `$defaults${protos.size}`));
    parts.push(`__proto__:${id}`);
  }
  for (const [k, x] of Object.entries(v))
    if (x !== undefined) parts.push(`${/^[$\w]+$/.test(k) ? k : JSON.stringify(k)}:${literal(x, protos)}`);
  return `{${parts.join(",")}}`;
}

/** A constant as a JavaScript expression. */
function constant(v: unknown): string {
  switch (typeof v) {
    case "string":
      return JSON.stringify(v);
    case "boolean":
      return String(v);
    case "bigint":
      return `${v}n`;
    case "number":
      return Object.is(v, -0)
        ? "-0"
        : Number.isNaN(v)
          ? "NaN"
          : v === Infinity
            ? "Infinity"
            : v === -Infinity
              ? "-Infinity"
              : String(v);
    case "undefined":
      return "undefined";
  }
  if (v instanceof Uint8Array) return `new Uint8Array([${v.join(",")}])`;
  throw new Error(`embed-descriptors: no constant for ${String(v)}`);
}

const FIELD_KINDS = ["scalar", "enum", "message", "list"];

/**
 * The DescGraph (src/images/embed.ts) of a file protobuf-es built, as an expression: per field what
 * createFileRegistry computed. Undefined for a file with what graphFile does not build.
 */
function descGraph(file: DescFile): string | undefined {
  if (file.extensions.length || file.services.length) return undefined;
  const m: string[] = [],
    o: string[] = [],
    e: string[] = [];
  const enumSpec = (d: DescEnum) => {
    const vals = d.values.flatMap((v) => [
      JSON.stringify(v.localName),
      v.jsonName !== v.name ? JSON.stringify(v.jsonName) : "0",
    ]);
    e.push(
      `[${d.open ? 1 : 0},${d.sharedPrefix !== undefined ? JSON.stringify(d.sharedPrefix) : 0}${vals.length ? "," + vals.join(",") : ""}]`
    );
  };
  // enums in creation order: the file's, then each message's before its nested messages
  const enumsOf = (d: DescMessage) => {
    d.nestedEnums.forEach(enumSpec);
    d.nestedMessages.forEach(enumsOf);
  };
  file.enums.forEach(enumSpec);
  let ok = true;
  const fieldsOf = (d: DescMessage) => {
    if (d.nestedExtensions.length || d.proto.nestedType.some((n) => n.options?.mapEntry)) ok = false;
    const decl = d.proto.oneofDecl;
    o.push(`[${decl.map((p) => JSON.stringify(d.oneofs.find((x) => x.proto === p)?.localName ?? "")).join(",")}]`);
    const fs = d.fields.map((f0: DescField) => {
      const f = f0 as any; // every DescField kind has these properties (undefined where they do not apply)
      if (f.fieldKind === "map" || f.proto !== d.proto.field[d.fields.indexOf(f)]) ok = false;
      const kind = FIELD_KINDS.indexOf(f.fieldKind);
      const ref = f.message?.typeName ?? f.enum?.typeName;
      const def = f.fieldKind === "list" ? undefined : f.getDefaultValue();
      const oneof = f.oneof ? decl.indexOf(f.oneof.proto) + 1 : 0;
      return `[${[
        JSON.stringify(f.localName),
        f.presence,
        f.utf8Validation ? 1 : 0,
        kind,
        constant(f.scalar),
        ref ? JSON.stringify(ref) : "0",
        constant(f.listKind),
        constant(f.delimitedEncoding),
        constant(f.packed),
        f.longAsString ? 1 : 0,
        def === undefined ? "0" : `()=>${constant(def)}`,
        oneof,
      ].join(",")}]`;
    });
    m.push(`[${fs.join(",")}]`);
    d.nestedMessages.forEach(fieldsOf);
  };
  file.messages.forEach((d) => {
    enumsOf(d);
  });
  file.messages.forEach(fieldsOf);
  if (!ok) return undefined;
  // the fields' records in a function: made when the first message of the file has its fields built
  return `{ed:${file.edition},mo:()=>[[${m.join(",")}],[${o.join(",")}]],e:[${e.join(",")}],s:${skeleton(file.proto as FileDescriptorProto)}}`;
}

const dep = (o: { options?: { deprecated?: boolean } }) => (o.options?.deprecated ? 1 : 0);

/**
 * What graphFile reads of the FileDescriptorProto, so that it need not be built (DescSkeleton in
 * embed.ts): names, numbers, JSON names (0: the field's name), deprecated flags.
 */
function skeleton(p: FileDescriptorProto): string {
  const str = JSON.stringify;
  const en = (e: EnumDescriptorProto): string =>
    `[${str(e.name)},${dep(e)},[${e.value.map((v) => `${str(v.name)},${v.number},${dep(v)}`).join(",")}]]`;
  const msg = (d: DescriptorProto): string =>
    `[${str(d.name)},${dep(d)},[${d.enumType.map(en).join(",")}],[${d.nestedType.map(msg).join(",")}],[${d.field
      .map((f) => `${str(f.name)},${f.number},${f.jsonName === f.name ? 0 : str(f.jsonName)},${dep(f)}`)
      .join(",")}],[${d.oneofDecl.map((o) => str(o.name)).join(",")}]]`;
  return `[${str(p.name)},${dep(p)},[${p.enumType.map(en).join(",")}],[${p.messageType.map(msg).join(",")}]]`;
}
