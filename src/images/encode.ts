// A protobuf encoder for CRIU's proto2 messages, compiled once per message type: one growing
// buffer for a whole image, no message objects needed (plain objects as well as messages made
// by create() are encoded), unset required fields written with their defaults (as fillRequired
// then toBinary would). It writes the same bytes as protobuf-es's toBinary (fields in number
// order, lists unpacked unless declared packed, negative int32 as 10 bytes); test/encode.test.ts
// compares the two on every message type. A dump of 10,000 fds spent a third of its frozen time
// creating and encoding messages through the generic path.
import type { DescField, DescMessage, Message } from "@bufbuild/protobuf";
import { ScalarType } from "@bufbuild/protobuf";

const enc = new TextEncoder();

/** A growing output buffer. */
export class PbWriter {
  buf = new Uint8Array(4096);
  pos = 0;
  private view = new DataView(this.buf.buffer);
  ensure(n: number) {
    if (this.pos + n > this.buf.length) this.grow(n);
  }
  private grow(n: number) {
    let len = this.buf.length * 2;
    while (len < this.pos + n) len *= 2;
    const b = new Uint8Array(len);
    b.set(this.buf.subarray(0, this.pos));
    this.buf = b;
    this.view = new DataView(b.buffer);
  }
  u32le(v: number) {
    this.ensure(4);
    this.view.setUint32(this.pos, v >>> 0, true);
    this.pos += 4;
  }
  raw(b: Uint8Array) {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  // (the checks of ensure written out in the hot writers: a small process's dump runs this code in
  // the interpreter, where each call costs)
  varint32(v: number) {
    if (this.pos + 5 > this.buf.length) this.grow(5);
    const b = this.buf;
    let p = this.pos;
    while (v > 0x7f) {
      b[p++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    b[p++] = v;
    this.pos = p;
  }
  /** a signed 32-bit value as a varint (negative: sign-extended to 10 bytes) */
  int32(v: number) {
    if (v >= 0) return this.varint32(v);
    this.ensure(10);
    for (let i = 0; i < 9; i++) {
      this.buf[this.pos++] = (v & 0x7f) | 0x80;
      v >>= 7;
    }
    this.buf[this.pos++] = 1;
  }
  varint64(v: bigint) {
    if (v >= 0n && v < 0x80000000n) return this.varint32(Number(v));
    v = BigInt.asUintN(64, v);
    // as two 32-bit halves: numbers, not a BigInt per 7 bits
    let lo = Number(v & 0xffffffffn),
      hi = Number(v >> 32n);
    if (this.pos + 10 > this.buf.length) this.grow(10);
    const b = this.buf;
    let p = this.pos;
    while (hi !== 0 || lo > 0x7f) {
      b[p++] = (lo & 0x7f) | 0x80;
      lo = ((lo >>> 7) | (hi << 25)) >>> 0;
      hi >>>= 7;
    }
    b[p++] = lo;
    this.pos = p;
  }
  fixed64(v: bigint) {
    this.ensure(8);
    this.view.setBigUint64(this.pos, BigInt.asUintN(64, v), true);
    this.pos += 8;
  }
  bytes(b: Uint8Array) {
    this.varint32(b.length);
    this.raw(b);
  }
  string(s: string) {
    let ascii = s.length < 128;
    if (ascii)
      for (let i = 0; i < s.length; i++)
        if (s.charCodeAt(i) > 0x7f) {
          ascii = false;
          break;
        }
    if (!ascii) return this.bytes(enc.encode(s));
    this.ensure(s.length + 1);
    this.buf[this.pos++] = s.length;
    for (let i = 0; i < s.length; i++) this.buf[this.pos++] = s.charCodeAt(i);
  }
  /** length-delimited contents written by f, the length in front */
  delimited(f: () => void) {
    const start = this.pos;
    f();
    this.endDelimited(start);
  }
  /** what was written since start becomes length-delimited */
  endDelimited(start: number) {
    const len = this.pos - start,
      n = varintSize(len);
    this.ensure(n);
    this.buf.copyWithin(start + n, start, this.pos);
    const end = this.pos + n;
    this.pos = start;
    this.varint32(len);
    this.pos = end;
  }
  finish(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }
}

function varintSize(v: number) {
  let n = 1;
  while (v > 0x7f) {
    v >>>= 7;
    n++;
  }
  return n;
}

type Put = (w: PbWriter, v: unknown) => void;
interface Field {
  name: string;
  required: boolean;
  list: boolean;
  packed: boolean;
  tag: number;
  put: Put;
  zero?: unknown;
  child?: DescMessage;
  isMsg: boolean;
  packedTag: number;
  /** the value's kind where encodeInto writes it itself (a valid value; anything else goes to put,
   *  which writes it or throws): uint32, uint64/int64, bool; else 0 */
  fast: number;
}
const FAST_U32 = 1,
  FAST_U64 = 2,
  FAST_BOOL = 3;

function int(f: DescField, v: unknown, lo: number, hi: number): asserts v is number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < lo || v > hi)
    throw new Error(`cannot encode field ${f.parent.typeName}.${f.name}: ${String(v)} is out of range`);
}
const big = (v: unknown): bigint => (typeof v === "bigint" ? v : BigInt(v as number | string | boolean));

function scalarPut(f: DescField, t: ScalarType): { put: Put; wire: number } {
  switch (t) {
    case ScalarType.UINT32:
      return {
        wire: 0,
        put: (w, v) => {
          int(f, v, 0, 0xffffffff);
          w.varint32(v);
        },
      };
    case ScalarType.INT32:
      return {
        wire: 0,
        put: (w, v) => {
          int(f, v, -0x80000000, 0x7fffffff);
          w.int32(v);
        },
      };
    case ScalarType.SINT32:
      return {
        wire: 0,
        put: (w, v) => {
          int(f, v, -0x80000000, 0x7fffffff);
          w.varint32(((v << 1) ^ (v >> 31)) >>> 0);
        },
      };
    case ScalarType.BOOL:
      return {
        wire: 0,
        put: (w, v) => {
          w.ensure(1);
          w.buf[w.pos++] = v ? 1 : 0;
        },
      };
    case ScalarType.UINT64:
    case ScalarType.INT64:
      return { wire: 0, put: (w, v) => w.varint64(big(v)) };
    case ScalarType.SINT64:
      return {
        wire: 0,
        put: (w, v) => {
          const x = BigInt.asIntN(64, big(v));
          w.varint64((x << 1n) ^ (x >> 63n));
        },
      };
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return { wire: 1, put: (w, v) => w.fixed64(big(v)) };
    case ScalarType.DOUBLE:
      return {
        wire: 1,
        put: (w, v) => {
          w.ensure(8);
          new DataView(w.buf.buffer).setFloat64(w.pos, v as number, true);
          w.pos += 8;
        },
      };
    case ScalarType.FIXED32:
      return {
        wire: 5,
        put: (w, v) => {
          int(f, v, 0, 0xffffffff);
          w.u32le(v);
        },
      };
    case ScalarType.SFIXED32:
      return {
        wire: 5,
        put: (w, v) => {
          int(f, v, -0x80000000, 0x7fffffff);
          w.u32le(v);
        },
      };
    case ScalarType.FLOAT:
      return {
        wire: 5,
        put: (w, v) => {
          w.ensure(4);
          new DataView(w.buf.buffer).setFloat32(w.pos, v as number, true);
          w.pos += 4;
        },
      };
    case ScalarType.STRING:
      return { wire: 2, put: (w, v) => w.string(typeof v === "string" ? v : String(v)) };
    case ScalarType.BYTES:
      return { wire: 2, put: (w, v) => w.bytes(v as Uint8Array) };
  }
  throw new Error(`scalar type ${t} of ${f.parent.typeName}.${f.name} is not known`);
}

function zeroOf(f: DescField): unknown {
  if (f.fieldKind !== "scalar" && f.fieldKind !== "enum") return undefined; // (called for singular scalars and enums)
  const d = f.getDefaultValue?.();
  if (d !== undefined) return d;
  if (f.fieldKind === "enum") return f.enum.values[0].number;
  switch (f.scalar) {
    case ScalarType.STRING:
      return "";
    case ScalarType.BYTES:
      return new Uint8Array(0);
    case ScalarType.BOOL:
      return false;
    case ScalarType.INT64:
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
    case ScalarType.SINT64:
      return 0n;
    default:
      return 0;
  }
}

const plans = new WeakMap<DescMessage, Field[]>();
function plan(schema: DescMessage): Field[] {
  let p = plans.get(schema);
  if (p) return p;
  p = [];
  plans.set(schema, p);
  // (in number order: most messages declare their fields so, and need no sort)
  let fs = schema.fields;
  for (let i = 1; i < fs.length; i++)
    if (fs[i].number < fs[i - 1].number) {
      fs = [...fs].sort((a, b) => a.number - b.number);
      break;
    }
  for (const f of fs) {
    if (f.oneof || f.fieldKind === "map")
      throw new Error(`${schema.typeName}.${f.name}: oneof and map fields are not encoded here`);
    const isMsg = f.fieldKind === "message" || (f.fieldKind === "list" && f.listKind === "message");
    const list = f.fieldKind === "list";
    let put: Put, wire: number;
    if (isMsg) {
      const child = f.message as DescMessage;
      put = (w, v) => {
        const start = w.pos;
        encodeInto(w, child, v as object);
        w.endDelimited(start);
      };
      wire = 2;
    } else {
      const t =
        f.fieldKind === "enum" || (f.fieldKind === "list" && f.listKind === "enum") ? ScalarType.INT32 : f.scalar;
      if (t === undefined) throw new Error(`${schema.typeName}.${f.name}: no scalar type`);
      ({ put, wire } = scalarPut(f, t));
    }
    p.push({
      name: f.localName,
      required: f.presence === 3 /* LEGACY_REQUIRED */,
      list,
      packed: f.fieldKind === "list" && !!f.packed,
      tag: (f.number << 3) | wire,
      packedTag: (f.number << 3) | 2,
      put,
      isMsg,
      child: isMsg ? f.message : undefined,
      zero: !isMsg && !list ? zeroOf(f) : undefined,
      fast:
        isMsg || f.fieldKind === "enum" || (f.fieldKind === "list" && f.listKind === "enum")
          ? 0
          : f.scalar === ScalarType.UINT32
            ? FAST_U32
            : f.scalar === ScalarType.UINT64 || f.scalar === ScalarType.INT64
              ? FAST_U64
              : f.scalar === ScalarType.BOOL
                ? FAST_BOOL
                : 0,
    });
  }
  return p;
}

const own = Object.prototype.hasOwnProperty;

/** msg's fields into w (no length in front). msg: a plain object or a message from create(). */
export function encodeInto(w: PbWriter, schema: DescMessage, msg: object) {
  const fields = plan(schema);
  const m = msg as Record<string, unknown>; // read by descriptor: the plan's local names
  // a plain object has no fields but its own (a message from create() may have defaults on its prototype)
  const plain = Object.getPrototypeOf(msg) === Object.prototype;
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i];
    let v = plain || own.call(msg, f.name) ? m[f.name] : undefined;
    if (f.list) {
      const l = v as unknown[] | null | undefined;
      if (l == null || !l.length) continue;
      const n = l.length;
      if (f.packed) {
        w.varint32(f.packedTag);
        const start = w.pos;
        for (let j = 0; j < n; j++) f.put(w, l[j]);
        w.endDelimited(start);
      } else if (f.fast === FAST_U32) {
        // (registers' and FPU state's lists: hundreds of values in a core image) the tag and each
        // valid value written here, at most 10 bytes each
        w.ensure(10 * n);
        const b = w.buf,
          tag = f.tag;
        let p = w.pos;
        for (let j = 0; j < n; j++) {
          let x = l[j] as number;
          if (typeof x !== "number" || !(x >= 0 && x <= 0xffffffff) || x % 1 !== 0) {
            w.pos = p;
            f.put(w, x); // throws
          }
          let t = tag;
          while (t > 0x7f) {
            b[p++] = (t & 0x7f) | 0x80;
            t >>>= 7;
          }
          b[p++] = t;
          while (x > 0x7f) {
            b[p++] = (x & 0x7f) | 0x80;
            x >>>= 7;
          }
          b[p++] = x;
        }
        w.pos = p;
      } else if (f.isMsg) {
        const child = f.child!;
        for (let j = 0; j < n; j++) {
          w.varint32(f.tag);
          const start = w.pos;
          encodeInto(w, child, l[j] as object);
          w.endDelimited(start);
        }
      } else
        for (let j = 0; j < n; j++) {
          w.varint32(f.tag);
          f.put(w, l[j]);
        }
      continue;
    }
    if (v == null) {
      if (!f.required) continue;
      v = f.isMsg ? {} : f.zero; // a required message unset: its own required fields, defaulted
    }
    w.varint32(f.tag);
    const fast = f.fast;
    if (fast === FAST_U32 && typeof v === "number" && v >= 0 && v <= 0xffffffff && v % 1 === 0) w.varint32(v);
    else if (fast === FAST_U64 && typeof v === "bigint") w.varint64(v);
    else if (fast === FAST_BOOL) w.varint32(v ? 1 : 0);
    else if (f.isMsg) {
      const start = w.pos;
      encodeInto(w, f.child!, v as object);
      w.endDelimited(start);
    } else f.put(w, v);
  }
  const unknownFields = (msg as Partial<Message>).$unknown;
  if (unknownFields?.length) {
    for (const u of unknownFields) {
      w.varint32(((u.no << 3) | u.wireType) >>> 0);
      w.raw(u.data);
    }
  }
}

/** One message's bytes (as toBinary after fillRequired). */
export function encodeMessage(schema: DescMessage, msg: object): Uint8Array {
  const w = new PbWriter();
  encodeInto(w, schema, msg);
  return w.finish();
}
