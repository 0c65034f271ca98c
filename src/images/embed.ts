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

export function embeddedFile(proto: () => object, deps: DescFile[] = [], graph?: DescGraph): DescFile {
  let built: FileDescriptorProto | undefined;
  const fileProto = () => {
    if (built) return built;
    built = proto() as FileDescriptorProto;
    built.dependency = deps.map((d) => d.proto.name);
    return built;
  };
  if (graph && process.env.CRIU_BUN_DESCRIPTORS !== "registry") return graphFile(fileProto, deps, graph);
  const p = fileProto();
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
// objects, walking the file's skeleton (the FileDescriptorProto's names and numbers) in
// createFileRegistry's order. createFileRegistry ran
// in JavaScriptCore's interpreter (start-up code is not JIT-compiled) and cost about as much CPU
// as the rest of a small process's dump. The build checks that the result equals protobuf-es's
// own, object by object (scripts/check-descriptors.ts, also test/descriptors.test.ts).

/** Per message (creation order): its fields, then the local names of its oneofs. Per field:
 * [localName, presence, utf8Validation 0|1, kind, scalar, type name of message|enum, listKind,
 *  delimitedEncoding, packed, longAsString 0|1, default (a function; 0: none), oneof index + 1].
 * kind: 0 scalar, 1 enum, 2 message, 3 list. Per enum (creation order): [open 0|1, sharedPrefix
 * or 0, then per value: localName, jsonName or 0]. s: the file's skeleton (DescSkeleton). */
interface DescGraph {
  ed: number;
  /** [per message its fields, per message its oneofs' local names]: called when the first message of
   *  the file has its fields built (a file none of whose types a command reads never makes them) */
  mo: () => [unknown[][][], string[][]];
  e: unknown[][];
  s: SkFile;
}

// What graphFile reads of the FileDescriptorProto, written beside the graph so that the proto
// itself (a few objects per field: options, their unknown fields, empty lists; about half of the
// descriptors' start-up CPU) is built only when a descriptor's `proto` is read. Deprecated: 0|1.
/** [name, deprecated, enums, messages] */
type SkFile = [string, number, SkEnum[], SkMessage[]];
/** [name, deprecated, per value: name, number, deprecated] */
type SkEnum = [string, number, (string | number)[]];
/** [name, deprecated, nested enums, nested messages, per field: name, number, jsonName (0: the
 *  name), deprecated; oneof names] */
type SkMessage = [string, number, SkEnum[], SkMessage[], (string | number)[], string[]];

// `proto` of the descriptors graphFile builds: a getter on their prototypes that finds the part of
// the file's FileDescriptorProto (built on first use) by name, or number for a field: the same
// objects protobuf-es's descriptors hold. Nothing on the dump or restore path reads it.
type WithParent = { parent?: { proto: DescriptorProto }; name: string };
const fileProtos = new WeakMap<object, () => FileDescriptorProto>();
const FILE_PROTO = {
  get proto(): FileDescriptorProto {
    return fileProtos.get(this)!();
  },
};
// A message's fields (fields, field, oneofs, members) are built the first time one of them is read,
// by these getters, which then define them as the message's own properties: a sleep's dump or restore
// reads those of the ~30 types it encodes or decodes (decode.ts makes a nested type's plan when it
// meets one of its fields), not those of the ~125 others (other architectures' registers, socket and
// file kinds the process does not have, namespaces, ...). Building every field of every type was
// about two thirds of the descriptors' start-up (the schemas' import 10.4 -> 5.0 ms median, load 2-3).
const MESSAGE_PROTO = {
  get proto(): DescriptorProto {
    const d = this as unknown as WithParent & { file: DescFile };
    return (d.parent ? d.parent.proto.nestedType : d.file.proto.messageType).find((m) => m.name === d.name)!;
  },
  get fields() {
    return buildFields(this).fields;
  },
  get field() {
    return buildFields(this).field;
  },
  get oneofs() {
    return buildFields(this).oneofs;
  },
  get members() {
    return buildFields(this).members;
  },
};
/** A message's fields as graphFile has them (DescGraph): per field its graph entry (`f`: localName,
 *  presence, utf8Validation, kind, scalar, type name, listKind, delimitedEncoding, packed,
 *  longAsString, default, oneof index + 1) and skeleton (`sk`: name, number, jsonName, deprecated, 4
 *  per field), its oneofs' local names, and what finds a type by name for it. */
interface FieldGraph {
  f: unknown[][];
  sk: (string | number)[];
  oneofs: string[];
  type: (name: string) => DescMessage | DescEnum | undefined;
}
/** graph messages: their FieldGraph (without building the DescField objects; decode.ts plans) */
const graphs = new WeakMap<object, () => FieldGraph>();
/** The fields of a message from an embedded graph, undefined for any other descriptor. */
export function fieldGraph(d: DescMessage): FieldGraph | undefined {
  return graphs.get(d)?.();
}
/** messages whose fields are not built yet: what builds them (graphFile's fieldsOf) */
const unbuilt = new WeakMap<object, (d: DescMessage) => void>();
function buildFields(o: object): DescMessage {
  const d = o as DescMessage;
  const build = unbuilt.get(d);
  if (!build) throw new Error("descriptor fields read from an object that is not a message descriptor");
  build(d);
  unbuilt.delete(d);
  return d;
}
const ENUM_PROTO = {
  get proto(): EnumDescriptorProto {
    const d = this as unknown as WithParent & { file: DescFile };
    return (d.parent ? d.parent.proto.enumType : d.file.proto.enumType).find((e) => e.name === d.name)!;
  },
};
const VALUE_PROTO = {
  get proto() {
    const d = this as unknown as { parent: { proto: EnumDescriptorProto }; name: string };
    return d.parent.proto.value.find((v) => v.name === d.name)!;
  },
};
const FIELD_PROTO = {
  get proto() {
    const d = this as unknown as { parent: { proto: DescriptorProto }; number: number };
    return d.parent.proto.field.find((f) => f.number === d.number)!;
  },
};
const ONEOF_PROTO = {
  get proto() {
    const d = this as unknown as { parent: { proto: DescriptorProto }; name: string };
    return d.parent.proto.oneofDecl.find((o) => o.name === d.name)!;
  },
};

/** a field graph entry's kind: its [3] indexes this */
export const KINDS = ["scalar", "enum", "message", "list"] as const;
const noDefault = () => undefined;
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

function graphFile(proto: () => FileDescriptorProto, deps: DescFile[], g: DescGraph): DescFile {
  const [fileName, fileDeprecated, fileEnums, fileMessages] = g.s;
  const file = {
    __proto__: FILE_PROTO,
    kind: "file",
    deprecated: fileDeprecated === 1,
    edition: g.ed as DescFile["edition"],
    name: fileName.replace(/\.proto$/, ""),
    dependencies: deps,
    enums: [],
    messages: [],
    extensions: [],
    services: [],
    toString: () => `file ${fileName}`,
  } as unknown as DescFile;
  fileProtos.set(file, proto);
  const types = new Map<string, DescMessage | DescEnum>();
  let mi = 0,
    ei = 0;
  const enumOf = (sk: SkEnum, parent: DescMessage | undefined) => {
    const s = g.e[ei++];
    const [name, deprecated, vals] = sk;
    const typeName = parent ? `${parent.typeName}.${name}` : name;
    const d = {
      __proto__: ENUM_PROTO,
      kind: "enum",
      deprecated: deprecated === 1,
      file,
      parent,
      open: s[0] === 1,
      name,
      typeName,
      value: {},
      values: [],
      sharedPrefix: (s[1] as string | 0) || undefined,
      toString: typeToString,
    } as unknown as DescEnum;
    types.set(typeName, d);
    for (let i = 0, k = 0; k < vals.length; i++, k += 3) {
      const vname = vals[k] as string,
        number = vals[k + 1] as number;
      const v = {
        __proto__: VALUE_PROTO,
        kind: "enum_value",
        deprecated: vals[k + 2] === 1,
        parent: d,
        name: vname,
        localName: s[2 + 2 * i] as string,
        number,
        jsonName: (s[3 + 2 * i] as string | 0) || vname,
        toString: valueToString,
      } as unknown as DescEnumValue;
      d.values.push(v);
      d.value[number] ??= v;
    }
    (parent ? parent.nestedEnums : file.enums).push(d);
  };
  const messageOf = (sk: SkMessage, parent: DescMessage | undefined) => {
    const [name, deprecated, enums, nested] = sk;
    const typeName = parent ? `${parent.typeName}.${name}` : name;
    const d = {
      __proto__: MESSAGE_PROTO,
      kind: "message",
      deprecated: deprecated === 1,
      file,
      parent,
      name,
      typeName,
      nestedEnums: [],
      nestedMessages: [],
      nestedExtensions: [],
      toString: typeToString,
    } as unknown as DescMessage;
    (parent ? parent.nestedMessages : file.messages).push(d);
    types.set(typeName, d);
    // fields in createFileRegistry's order: each top-level message, then its nested ones, depth
    // first, as the messages are made here
    const at = mi++;
    unbuilt.set(d, (m) => fieldsOf(m, sk, at));
    graphs.set(d, () => graphOf(sk, at));
    for (const e of enums) enumOf(e, d);
    for (const n of nested) messageOf(n, d);
  };
  for (const e of fileEnums) enumOf(e, undefined);
  for (const m of fileMessages) messageOf(m, undefined);
  // (what fileTypes would build for a file that depends on this one: the same types, made above)
  typesOf.set(file, types);
  const lookup = (name: string) => {
    const t = types.get(name);
    if (t) return t;
    for (const f of deps) {
      const d = fileTypes(f).get(name);
      if (d) return d;
    }
    return undefined;
  };
  // a message's graph entries; at: its index in the graph
  let gm: unknown[][][] | undefined, go: string[][] | undefined;
  const graphOf = (sk: SkMessage, at: number): FieldGraph => {
    if (!gm || !go) {
      [gm, go] = g.mo();
      if (gm.length !== mi || go.length !== mi)
        throw new Error(`embedded descriptor of ${fileName}: graph does not match the file`);
    }
    const f = gm[at],
      fsk = sk[4];
    if (fsk.length !== 4 * f.length)
      throw new Error(`embedded descriptor of ${fileName}: graph does not match the file`);
    return { f, sk: fsk, oneofs: go[at], type: lookup };
  };
  // a message's fields (MESSAGE_PROTO's getters call it once)
  const fieldsOf = (d: DescMessage, sk: SkMessage, at: number) => {
    const { f: s, oneofs: names } = graphOf(sk, at);
    const [, , , , fsk, oneofNames] = sk;
    const fields: DescField[] = [],
      byName: Record<string, DescField> = {},
      oneofs: DescOneof[] = [],
      members: (DescField | DescOneof)[] = [];
    const oneofDescs = names.map(
      (localName, i) =>
        ({
          __proto__: ONEOF_PROTO,
          kind: "oneof",
          deprecated: false,
          parent: d,
          fields: [],
          name: oneofNames[i],
          localName,
          toString: memberToString,
        }) as unknown as DescOneof
    );
    const seen = new Set<DescOneof>();
    for (let i = 0; i < s.length; i++) {
      const f = s[i];
      const kind = KINDS[f[3] as number];
      const refName = f[5] as string | 0;
      const ref = refName ? lookup(refName) : undefined;
      if (refName && !ref) throw new Error(`embedded descriptor of ${fileName}: ${refName} not found`);
      const oneofIx = f[11] as number;
      const oneof = oneofIx ? oneofDescs[oneofIx - 1] : undefined;
      const name = fsk[4 * i] as string;
      // one object for every field kind: which DescField variant it is, only the graph's data says
      const field = {
        __proto__: FIELD_PROTO,
        kind: "field",
        deprecated: fsk[4 * i + 3] === 1,
        name,
        number: fsk[4 * i + 1],
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
        jsonName: fsk[4 * i + 2] === 0 ? name : fsk[4 * i + 2],
        toString: memberToString,
        fieldKind: kind,
      } as unknown as DescField;
      fields.push(field);
      byName[field.localName] = field;
      if (!oneof) members.push(field);
      else {
        oneof.fields.push(field);
        if (!seen.has(oneof)) {
          seen.add(oneof);
          members.push(oneof);
        }
      }
    }
    for (const o of oneofDescs) if (seen.has(o)) oneofs.push(o);
    Object.defineProperties(d, {
      fields: { value: fields, writable: true, enumerable: true, configurable: true },
      field: { value: byName, writable: true, enumerable: true, configurable: true },
      oneofs: { value: oneofs, writable: true, enumerable: true, configurable: true },
      members: { value: members, writable: true, enumerable: true, configurable: true },
    });
  };
  if (ei !== g.e.length) throw new Error(`embedded descriptor of ${fileName}: graph does not match the file`);
  return file;
}
