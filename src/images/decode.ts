// A protobuf decoder for CRIU's proto2 messages, the counterpart of encode.ts: it gives the same
// message objects as protobuf-es's fromBinary (same prototype defaults, the same own fields in the
// same order, $unknown alike, nested messages merged alike) and throws the same errors, because the
// wire is read by protobuf-es's own BinaryReader, call for call in fromBinary's order; only the
// dispatch is ours. fromBinary compiles a reader (closures per field) and an initializer per
// message type on first use: a small restore decodes ~25 types about once each, and that compiling
// cost more than the decoding. Here a type's plan is a field table made on first use, and the long
// packed lists of 64-bit values (the xsave area of every core-*.img) take a one-byte varint without
// BinaryReader's BigInt path. Types outside what this decoder knows (maps, groups, well-known
// wrappers, 64-bit fields as strings, editions other than proto2) go to fromBinary whole.
// test/decode.test.ts compares the two on every message type, on CRIU 4.2's and criu-bun's images,
// and on truncated and damaged entries (same objects or the same error).
import {
  fromBinary,
  ScalarType,
  type DescEnum,
  type DescField,
  type DescMessage,
  type Message,
} from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { scalarZeroValue } from "@bufbuild/protobuf/reflect";
import { fieldGraph, KINDS } from "./embed";

const EDITION_PROTO2 = 998;
const IMPLICIT = 2;
const RECURSION_LIMIT = 100;

/** BigInt of 0..127: a one-byte varint's value (what protoInt64.dec/uDec give for it) */
const SMALL: bigint[] = [];
for (let i = 0; i < 128; i++) SMALL.push(BigInt(i));

interface Plan {
  desc: DescMessage;
  typeName: string;
  proto: object;
  /** what create() sets on a fresh message, in member order: localName n, kind k (0 list, 1 oneof,
   *  2 constant), constant z */
  init: Init[];
  /** field by number */
  byNo: Map<number, Field>;
}

interface Init {
  n: string;
  k: number;
  z: unknown;
}

/** What readField reads of a field (DescField's properties of those names; oneof: its local name). */
interface Field {
  number: number;
  fieldKind: "scalar" | "enum" | "message" | "list";
  localName: string;
  oneof: string | undefined;
  scalar: ScalarType;
  utf8Validation: boolean;
  listKind: "scalar" | "enum" | "message" | undefined;
  enum: DescEnum | undefined;
  message: DescMessage | undefined;
}

const plans = new WeakMap<DescMessage, Plan | null>();

/** This type and every type it holds, if known to this decoder (null: fromBinary's). Fields
 * outside it: maps, groups, well-known types (wrappers, Struct: mapped values), 64-bit as strings. */
function planOf(desc: DescMessage): Plan | null {
  const known = plans.get(desc);
  if (known !== undefined) return known;
  const plan = desc.file.edition !== EDITION_PROTO2 ? null : (planOfGraph(desc) ?? planOfMembers(desc));
  plans.set(desc, plan || null);
  return plan || null;
}

/**
 * A plan from the embedded graph of the type's fields (embed.ts fieldGraph), the same planOfMembers
 * makes from the DescFields, without building them (an object of 22 properties per field and the
 * message's lists: most of a type's first decode). undefined: not a graph descriptor; false: a field outside this decoder.
 */
function planOfGraph(desc: DescMessage): Plan | false | undefined {
  const g = fieldGraph(desc);
  if (!g) return undefined;
  const proto: Record<string, unknown> = {};
  const init: Init[] = [];
  const byNo = new Map<number, Field>();
  const seen: boolean[] = [];
  const gf = g.f,
    sk = g.sk;
  for (let i = 0; i < gf.length; i++) {
    const f = gf[i];
    const fieldKind = KINDS[f[3] as number];
    if (fieldKind === undefined) return false;
    const refName = f[5] as string | 0;
    const ref = refName ? g.type(refName) : undefined;
    if (refName && !ref) return false;
    const oneofIx = f[11] as number;
    const localName = f[0] as string,
      delimited = f[7] === true,
      longAsString = f[9] === 1;
    const oneof = oneofIx ? g.oneofs[oneofIx - 1] : undefined;
    const field: Field = {
      number: sk[4 * i + 1] as number,
      fieldKind,
      localName,
      oneof,
      scalar: f[4] as ScalarType,
      utf8Validation: f[2] === 1,
      listKind: f[6] as Field["listKind"],
      enum: ref?.kind === "enum" ? ref : undefined,
      message: ref?.kind === "message" ? ref : undefined,
    };
    byNo.set(field.number, field);
    if (oneof !== undefined) {
      if (!seen[oneofIx]) {
        seen[oneofIx] = true;
        init.push({ n: oneof, k: 1, z: undefined });
      }
      if (fieldKind === "message" ? delimited : fieldKind === "scalar" && longAsString) return false;
      continue;
    }
    switch (fieldKind) {
      case "message":
        if (delimited) return false;
        continue;
      case "list":
        init.push({ n: localName, k: 0, z: undefined });
        if (field.listKind === "message" ? delimited : field.listKind === "scalar" && longAsString) return false;
        continue;
    }
    if (fieldKind === "scalar" && longAsString) return false;
    const d = f[10] ? (f[10] as () => unknown)() : undefined;
    const zero =
      d !== undefined
        ? d
        : fieldKind === "scalar"
          ? scalarZeroValue(field.scalar, false)
          : field.enum!.values[0].number;
    if (f[1] === IMPLICIT) init.push({ n: localName, k: 2, z: zero });
    proto[localName] = zero;
  }
  return { desc, typeName: desc.typeName, proto, init, byNo };
}

/** A plan from the type's DescFields (descriptors made otherwise: CRIU_BUN_DESCRIPTORS=registry). */
function planOfMembers(desc: DescMessage): Plan | null {
  const proto: Record<string, unknown> = {};
  const init: Init[] = [];
  const byNo = new Map<number, Field>();
  let ok = true;
  const fieldOf = (m: DescField): Field => ({
    number: m.number,
    fieldKind: m.fieldKind as Field["fieldKind"],
    localName: m.localName,
    oneof: m.oneof?.localName,
    scalar: m.scalar as ScalarType,
    utf8Validation: m.utf8Validation,
    listKind: m.fieldKind === "list" ? m.listKind : undefined,
    enum: m.enum,
    message: m.message,
  });
  // as create() (compileInitMessage) builds its message: proto2 keeps every scalar's and enum's
  // default on the prototype (an unset field reads its default and is not an own property)
  const members = desc.members;
  for (let i = 0; i < members.length; i++) {
    const m = members[i];
    if (m.kind === "oneof") {
      init.push({ n: m.localName, k: 1, z: undefined });
      for (let j = 0; j < m.fields.length; j++) {
        const f = m.fields[j];
        byNo.set(f.number, fieldOf(f));
        if (f.fieldKind === "message" ? f.delimitedEncoding : f.fieldKind === "scalar" && f.longAsString) ok = false;
      }
      continue;
    }
    byNo.set(m.number, fieldOf(m));
    switch (m.fieldKind) {
      case "message":
        if (m.delimitedEncoding) ok = false;
        continue;
      case "list":
        init.push({ n: m.localName, k: 0, z: undefined });
        if (m.listKind === "message") {
          if (m.delimitedEncoding) ok = false;
        } else if (m.listKind === "scalar" && m.longAsString) ok = false;
        continue;
      case "map":
        ok = false;
        continue;
    }
    if (m.fieldKind === "scalar" && m.longAsString) ok = false;
    const d = m.getDefaultValue();
    const zero =
      d !== undefined ? d : m.fieldKind === "scalar" ? scalarZeroValue(m.scalar, false) : m.enum.values[0].number;
    if (m.presence === IMPLICIT) init.push({ n: m.localName, k: 2, z: zero });
    proto[m.localName] = zero;
  }
  if (!ok) return null;
  return { desc, typeName: desc.typeName, proto, init, byNo };
}

/** Thrown by childPlan: a message type this decoder does not know sits inside the one decoded. */
const UNPLANNED = new Error("a nested type outside the decoder");
/** The plan of a nested message type, made when a field of it is first read (not with its holder's:
 *  the types a decode never meets, other architectures' registers, socket kinds of a process without
 *  sockets, are not looked at, and their descriptors' fields are never built: embed.ts). One this
 *  decoder does not know sends the whole message to fromBinary (decodeMessage), as when the holder's
 *  plan was refused. */
function childPlan(desc: DescMessage): Plan {
  const p = desc.typeName.startsWith("google.protobuf.") ? null : planOf(desc);
  if (!p) throw UNPLANNED;
  return p;
}

function createFrom(p: Plan): Record<string, unknown> {
  const m = Object.create(p.proto) as Record<string, unknown>;
  m.$typeName = p.typeName;
  const init = p.init;
  for (let i = 0; i < init.length; i++) {
    const e = init[i];
    m[e.n] = e.k === 0 ? [] : e.k === 1 ? { case: undefined } : e.z;
  }
  return m;
}

interface Ctx {
  depth: number;
  /** the reader's bytes (BinaryReader keeps its own private) */
  buf: Uint8Array;
}

function scalarOf(r: BinaryReader, buf: Uint8Array, t: ScalarType, utf8: boolean): unknown {
  switch (t) {
    case ScalarType.STRING:
      return r.string(utf8);
    case ScalarType.BOOL:
      return r.bool();
    case ScalarType.DOUBLE:
      return r.double();
    case ScalarType.FLOAT:
      return r.float();
    case ScalarType.INT32:
      return r.int32();
    case ScalarType.INT64:
    case ScalarType.UINT64: {
      // a one-byte varint inside the buffer: what int64()/uint64() would read and give
      const b = buf[r.pos];
      if (b < 0x80 && r.pos < r.len) {
        r.pos++;
        return SMALL[b];
      }
      return t === ScalarType.INT64 ? r.int64() : r.uint64();
    }
    case ScalarType.FIXED64:
      return r.fixed64();
    case ScalarType.BYTES:
      return r.bytes();
    case ScalarType.FIXED32:
      return r.fixed32();
    case ScalarType.SFIXED32:
      return r.sfixed32();
    case ScalarType.SFIXED64:
      return r.sfixed64();
    case ScalarType.SINT64:
      return r.sint64();
    case ScalarType.UINT32:
      return r.uint32();
    case ScalarType.SINT32:
      return r.sint32();
  }
}

/** varint32write of protobuf-es: a closed enum's unknown value as its unknown field's data */
function varint32Bytes(value: number): Uint8Array {
  const bytes: number[] = [];
  if (value >>> 0 < 0x80) bytes.push(value);
  else if (value >= 0) {
    while (value > 0x7f) {
      bytes.push((value & 0x7f) | 0x80);
      value = value >>> 7;
    }
    bytes.push(value);
  } else {
    for (let i = 0; i < 9; i++) {
      bytes.push((value & 127) | 128);
      value = value >> 7;
    }
    bytes.push(1);
  }
  return new Uint8Array(bytes);
}

type Unknown = { no: number; wireType: WireType; data: Uint8Array };

/** fromBinary's compileMessageReader */
function readMessage(p: Plan, message: Record<string, unknown>, r: BinaryReader, ctx: Ctx, length: number) {
  if (++ctx.depth > RECURSION_LIMIT)
    throw new Error(
      `cannot decode ${String(p.desc)} from binary: maximum recursion depth of ${RECURSION_LIMIT} reached`
    );
  const end = r.pos + length;
  const unknownFields = (message.$unknown as Unknown[] | undefined) ?? [];
  const buf = ctx.buf;
  while (r.pos < end) {
    // BinaryReader.tag(), without its [fieldNo, wireType] array (destructured through the
    // iterator protocol in the interpreter), with a one-byte tag read in place
    const start = r.pos;
    let tag: number;
    const b = buf[start];
    if (b < 0x80 && start < r.len) {
      tag = b;
      r.pos = start + 1;
    } else {
      tag = r.uint32();
      const bytesRead = r.pos - start;
      if (bytesRead > 5 || (bytesRead === 5 && buf[r.pos - 1] > 0x0f))
        throw new Error("illegal tag: varint overflows uint32");
    }
    const fieldNo = tag >>> 3;
    const wireType = (tag & 7) as WireType;
    if (fieldNo <= 0 || wireType > 5) throw new Error(`illegal tag: field no ${fieldNo} wire type ${wireType}`);
    const f = p.byNo.get(fieldNo);
    if (f === undefined) {
      const data = r.skip(wireType, fieldNo, RECURSION_LIMIT - ctx.depth);
      unknownFields.push({ no: fieldNo, wireType, data });
      continue;
    }
    readField(f, message, r, ctx, wireType);
  }
  if (unknownFields.length > 0) message.$unknown = unknownFields;
  ctx.depth--;
}

/** fromBinary's compiled field readers (compileFieldReader), for the kinds planOf lets through */
function readField(f: Field, message: Record<string, unknown>, r: BinaryReader, ctx: Ctx, wireType: WireType) {
  switch (f.fieldKind) {
    case "scalar": {
      const v = scalarOf(r, ctx.buf, f.scalar, f.utf8Validation);
      if (f.oneof !== undefined) message[f.oneof] = { case: f.localName, value: v };
      else message[f.localName] = v;
      return;
    }
    case "enum": {
      const val = r.int32();
      const e = f.enum!;
      if (e.open || e.values.some((v) => v.number === val)) {
        if (f.oneof !== undefined) message[f.oneof] = { case: f.localName, value: val };
        else message[f.localName] = val;
      } else {
        // closed enum: an unknown value is kept as an unknown field
        const unknownFields = (message.$unknown as Unknown[] | undefined) ?? [];
        unknownFields.push({ no: f.number, wireType, data: varint32Bytes(val) });
        message.$unknown = unknownFields;
      }
      return;
    }
    case "message": {
      const cp = childPlan(f.message!);
      if (f.oneof !== undefined) {
        const oneof = message[f.oneof] as { case: string | undefined; value?: unknown };
        const child = (oneof.case === f.localName ? oneof.value : undefined) ?? createFrom(cp);
        readMessage(cp, child as Record<string, unknown>, r, ctx, r.uint32());
        message[f.oneof] = { case: f.localName, value: child };
        return;
      }
      const child = (message[f.localName] as Record<string, unknown> | undefined) ?? createFrom(cp);
      readMessage(cp, child, r, ctx, r.uint32());
      message[f.localName] = child;
      return;
    }
    case "list": {
      const items = message[f.localName] as unknown[];
      if (f.listKind === "message") {
        const cp = childPlan(f.message!);
        const child = createFrom(cp);
        readMessage(cp, child, r, ctx, r.uint32());
        items.push(child);
        return;
      }
      const t = f.listKind === "enum" ? ScalarType.INT32 : f.scalar;
      if (wireType === WireType.LengthDelimited && t !== ScalarType.STRING && t !== ScalarType.BYTES) {
        const end = r.uint32() + r.pos;
        if (t === ScalarType.UINT32 || t === ScalarType.INT32 || t === ScalarType.UINT64 || t === ScalarType.INT64) {
          // packed varints (the xsave area, registers): a one-byte one inside the buffer is what
          // uint32()/int32()/uint64()/int64() would read and give; any other through them
          const buf = ctx.buf,
            len = r.len,
            big = t === ScalarType.UINT64 || t === ScalarType.INT64;
          let pos = r.pos;
          while (pos < end) {
            const b = buf[pos];
            if (b < 0x80 && pos < len) {
              pos++;
              items.push(big ? SMALL[b] : b);
              continue;
            }
            r.pos = pos;
            items.push(scalarOf(r, buf, t, f.utf8Validation));
            pos = r.pos;
          }
          r.pos = pos;
        } else while (r.pos < end) items.push(scalarOf(r, ctx.buf, t, f.utf8Validation));
      } else items.push(scalarOf(r, ctx.buf, t, f.utf8Validation));
      return;
    }
  }
}

/** fromBinary(schema, bytes): the same message, or the same error. */
export function decodeMessage<T extends Message>(schema: DescMessage, bytes: Uint8Array): T {
  const p = planOf(schema);
  if (!p) return fromBinary(schema, bytes) as T;
  const message = createFrom(p);
  try {
    readMessage(p, message, new BinaryReader(bytes), { depth: 0, buf: bytes }, bytes.byteLength);
  } catch (e) {
    if (e !== UNPLANNED) throw e;
    plans.set(schema, null);
    return fromBinary(schema, bytes) as T;
  }
  return message as T;
}
