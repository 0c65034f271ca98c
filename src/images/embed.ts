// The descriptors of the generated schemas (src/images/gen), as scripts/embed-descriptors.ts
// writes them: each .proto file's FileDescriptorProto as an object literal, turned into a DescFile
// here. Same result as protobuf-es's fileDesc(base64), without decoding anything at start-up.
// messageDesc/enumDesc below do what codegenv2's functions of those names do (find a message or
// enum by its index path); importing any value from @bufbuild/protobuf/codegenv2 would load its
// descriptor.proto, built at once (~5 ms).
import {
  createFileRegistry,
  type DescEnum,
  type DescEnumValue,
  type DescField,
  type DescFile,
  type DescMessage,
  type DescOneof,
  type Message,
} from "@bufbuild/protobuf";
import type { DescriptorProto, EnumDescriptorProto, FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import type { GenEnum, GenMessage } from "@bufbuild/protobuf/codegenv2";

export function embeddedFile(proto: object, deps: DescFile[] = [], graph?: DescGraph): DescFile {
  const p = proto as FileDescriptorProto;
  p.dependency = deps.map((d) => d.proto.name);
  if (graph && process.env.CRIU_BUN_DESCRIPTORS !== "registry") return graphFile(p, deps, graph);
  const file = createFileRegistry(p, (name) => deps.find((d) => d.proto.name === name)).getFile(p.name);
  if (!file) throw new Error(`embedded descriptor of ${p.name} did not register`);
  return file;
}

/** The message at index `path` of a file, then down through nested message indexes. */
export function messageDesc<T extends Message>(file: DescFile, path: number, ...paths: number[]): GenMessage<T> {
  let m: DescMessage = file.messages[path];
  for (const i of paths) m = m.nestedMessages[i];
  return m as GenMessage<T>;
}

/** The enum at index `path` of a file; with more indexes: message indexes, then the enum's. */
export function enumDesc<T extends number>(file: DescFile, path: number, ...paths: number[]): GenEnum<T> {
  if (!paths.length) return file.enums[path] as GenEnum<T>;
  let m: DescMessage = file.messages[path];
  for (const i of paths.slice(0, -1)) m = m.nestedMessages[i];
  return m.nestedEnums[paths[paths.length - 1]] as GenEnum<T>;
}

// ---------------------------------------------------------------------------------------------
// The descriptors built from a precomputed graph (scripts/embed-descriptors.ts writes it as the
// third argument of embeddedFile): what createFileRegistry computes per field (names, presence,
// packing, feature resolution, type lookups) is done at build time, so start-up only makes the
// objects, walking the FileDescriptorProto in createFileRegistry's order. createFileRegistry ran
// in JavaScriptCore's interpreter (start-up code is not JIT-compiled) and cost about as much CPU
// as the rest of a small process's dump. The build checks that the result equals protobuf-es's
// own, object by object (scripts/check-descriptors.ts, also test/descriptors.test.ts).

/** Per message (creation order): its fields, then the local names of its oneofs. Per field:
 * [localName, presence, utf8Validation 0|1, kind, scalar, type name of message|enum, listKind,
 *  delimitedEncoding, packed, longAsString 0|1, default (a function; 0: none), oneof index + 1].
 * kind: 0 scalar, 1 enum, 2 message, 3 list. Per enum (creation order): [open 0|1, sharedPrefix
 * or 0, then per value: localName, jsonName or 0]. */
interface DescGraph {
  ed: number;
  m: unknown[][][];
  o: string[][];
  e: unknown[][];
}

const KINDS = ["scalar", "enum", "message", "list"] as const;
const noDefault = () => undefined;
function fileToString(this: DescFile) {
  return `file ${this.proto.name}`;
}
function typeToString(this: { kind: string; typeName: string }) {
  return `${this.kind} ${this.typeName}`;
}
function memberToString(this: { kind: string; parent: { typeName: string }; name: string }) {
  return `${this.kind} ${this.parent.typeName}.${this.name}`;
}
function valueToString(this: { parent: { typeName: string }; name: string }) {
  return `enum value ${this.parent.typeName}.${this.name}`;
}

/** every message and enum of a file, by type name (for fields whose type is in a dependency) */
const typesOf = new WeakMap<DescFile, Map<string, DescMessage | DescEnum>>();
function fileTypes(f: DescFile): Map<string, DescMessage | DescEnum> {
  let m = typesOf.get(f);
  if (m) return m;
  m = new Map();
  const add = (d: DescMessage) => {
    m!.set(d.typeName, d);
    for (const e of d.nestedEnums) m!.set(e.typeName, e);
    d.nestedMessages.forEach(add);
  };
  for (const e of f.enums) m.set(e.typeName, e);
  f.messages.forEach(add);
  typesOf.set(f, m);
  return m;
}

function graphFile(p: FileDescriptorProto, deps: DescFile[], g: DescGraph): DescFile {
  const file: DescFile = {
    kind: "file",
    proto: p,
    deprecated: p.options?.deprecated ?? false,
    edition: g.ed as DescFile["edition"],
    name: p.name.replace(/\.proto$/, ""),
    dependencies: deps,
    enums: [],
    messages: [],
    extensions: [],
    services: [],
    toString: fileToString,
  };
  const types = new Map<string, DescMessage | DescEnum>();
  let mi = 0,
    ei = 0;
  const enumOf = (ep: EnumDescriptorProto, parent: DescMessage | undefined) => {
    const s = g.e[ei++];
    const typeName = parent ? `${parent.typeName}.${ep.name}` : ep.name;
    const d: DescEnum = {
      kind: "enum",
      proto: ep,
      deprecated: ep.options?.deprecated ?? false,
      file,
      parent,
      open: s[0] === 1,
      name: ep.name,
      typeName,
      value: {},
      values: [],
      sharedPrefix: (s[1] as string | 0) || undefined,
      toString: typeToString,
    };
    types.set(typeName, d);
    for (let i = 0; i < ep.value.length; i++) {
      const vp = ep.value[i];
      const v: DescEnumValue = {
        kind: "enum_value",
        proto: vp,
        deprecated: vp.options?.deprecated ?? false,
        parent: d,
        name: vp.name,
        localName: s[2 + 2 * i] as string,
        number: vp.number,
        jsonName: (s[3 + 2 * i] as string | 0) || vp.name,
        toString: valueToString,
      };
      d.values.push(v);
      d.value[vp.number] ??= v;
    }
    (parent ? parent.nestedEnums : file.enums).push(d);
  };
  const messageOf = (mp: DescriptorProto, parent: DescMessage | undefined) => {
    const typeName = parent ? `${parent.typeName}.${mp.name}` : mp.name;
    const d: DescMessage = {
      kind: "message",
      proto: mp,
      deprecated: mp.options?.deprecated ?? false,
      file,
      parent,
      name: mp.name,
      typeName,
      fields: [],
      field: {},
      oneofs: [],
      members: [],
      nestedEnums: [],
      nestedMessages: [],
      nestedExtensions: [],
      toString: typeToString,
    };
    (parent ? parent.nestedMessages : file.messages).push(d);
    types.set(typeName, d);
    for (const e of mp.enumType) enumOf(e, d);
    for (const n of mp.nestedType) messageOf(n, d);
  };
  for (const e of p.enumType) enumOf(e, undefined);
  for (const m of p.messageType) messageOf(m, undefined);
  const lookup = (name: string) => types.get(name) ?? deps.map((f) => fileTypes(f).get(name)).find((x) => x);
  // fields, in createFileRegistry's order (each top-level message, then its nested ones, depth first)
  const fieldsOf = (d: DescMessage) => {
    const s = g.m[mi],
      names = g.o[mi];
    mi++;
    const mp = d.proto;
    const oneofs = names.map(
      (localName, i): DescOneof => ({
        kind: "oneof",
        proto: mp.oneofDecl[i],
        deprecated: false,
        parent: d,
        fields: [],
        name: mp.oneofDecl[i].name,
        localName,
        toString: memberToString,
      })
    );
    const seen = new Set<DescOneof>();
    for (let i = 0; i < s.length; i++) {
      const f = s[i],
        fp = mp.field[i];
      const kind = KINDS[f[3] as number];
      const refName = f[5] as string | 0;
      const ref = refName ? lookup(refName) : undefined;
      if (refName && !ref) throw new Error(`embedded descriptor of ${p.name}: ${refName} not found`);
      const oneofIx = f[11] as number;
      const oneof = oneofIx ? oneofs[oneofIx - 1] : undefined;
      // one object for every field kind: which DescField variant it is, only the graph's data says
      const field = {
        kind: "field",
        proto: fp,
        deprecated: fp.options?.deprecated ?? false,
        name: fp.name,
        number: fp.number,
        scalar: f[4],
        message: ref?.kind === "message" ? ref : undefined,
        enum: ref?.kind === "enum" ? ref : undefined,
        presence: f[1],
        utf8Validation: f[2] === 1,
        listKind: f[6],
        mapKind: undefined,
        mapKey: undefined,
        delimitedEncoding: f[7],
        packed: f[8],
        longAsString: f[9] === 1,
        getDefaultValue: kind === "list" ? undefined : (f[10] as (() => unknown) | 0) || noDefault,
        parent: d,
        oneof,
        localName: f[0],
        jsonName: fp.jsonName,
        toString: memberToString,
        fieldKind: kind,
      } as DescField;
      d.fields.push(field);
      d.field[field.localName] = field;
      if (!oneof) d.members.push(field);
      else {
        oneof.fields.push(field);
        if (!seen.has(oneof)) {
          seen.add(oneof);
          d.members.push(oneof);
        }
      }
    }
    for (const o of oneofs) if (seen.has(o)) d.oneofs.push(o);
    for (const n of d.nestedMessages) fieldsOf(n);
  };
  for (const m of file.messages) fieldsOf(m);
  if (mi !== g.m.length || ei !== g.e.length)
    throw new Error(`embedded descriptor of ${p.name}: graph does not match the file`);
  return file;
}
