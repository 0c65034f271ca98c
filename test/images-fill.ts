// Test helper: build messages with a non-default value in every field, and matching payloads.
import { create, getOption, hasOption, type DescMessage } from "@bufbuild/protobuf";
import { criu } from "../src/images/gen/opts_pb";
import { KINDS, PAGEMAP_HEAD_SCHEMA, type ImageKind } from "../src/images/magic";
import { ghost_chunk_entrySchema } from "../src/images/gen/files_pb";
import { ipc_msgSchema } from "../src/images/gen/ns_pb";
import { ipcMsgPayload, type PayloadItem } from "../src/images/image";

const htonl = (v: number) => (((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24)) >>> 0;

function scalar(f: any, seed: number): unknown {
  const o = hasOption(f, criu) ? getOption(f, criu) : undefined;
  if (f.fieldKind === "enum" || f.listKind === "enum") {
    const vals = f.enum.values;
    return vals[Math.min(vals.length - 1, 1 + (seed % 2))].number;
  }
  switch (f.scalar) {
    case 8:
      return true;
    case 9:
      return `s${f.number}-${seed}-ü "q" \\`;
    case 12:
      if (o?.conv === "unix_name") return new Uint8Array([0, ...new TextEncoder().encode(`sock=${seed} tab\t.end `)]);
      return new Uint8Array(Array.from({ length: 60 + seed }, (_, i) => (i * 37 + seed) & 255));
    case 3:
    case 18:
    case 16:
      return -(1n << 40n) - BigInt(f.number); // int64/sint64/sfixed64
    case 4:
    case 6:
      return (1n << 63n) + BigInt(f.number * 7 + seed); // uint64/fixed64: beyond 2^53
    case 5:
    case 17:
    case 15:
      return -(f.number * 3 + seed); // int32/sint32/sfixed32
    default:
      if (o?.flags) return (0x80000005 + (seed << 4)) >>> 0;
      if (o?.dict) return seed % 2 ? 2 : 1000 + f.number;
      return 1000 + f.number * 3 + seed; // uint32/fixed32
  }
}

/** Field numbers from here on are criu-bun extensions, which CRIU's crit does not know. */
export const EXTENSION_FIELDS = 1000;
let withExtensions = true;
/** Leave criu-bun's extension fields out of filled messages (for comparisons with crit). */
export function criuFieldsOnly<T>(fn: () => T): T {
  withExtensions = false;
  try {
    return fn();
  } finally {
    withExtensions = true;
  }
}

/** Every field set (lists get two elements), recursion bounded. */
export function fill<T = any>(schema: DescMessage, seed = 1, depth = 0): T {
  const m: any = create(schema);
  for (const f of schema.fields as any[]) {
    if (!withExtensions && f.number >= EXTENSION_FIELDS) continue;
    const o = hasOption(f, criu) ? getOption(f, criu) : undefined;
    if (f.fieldKind === "message") {
      if (depth < 3) m[f.localName] = fill(f.message, seed + 1, depth + 1);
    } else if (f.fieldKind === "list") {
      if (f.listKind === "message") {
        if (depth < 3) m[f.localName] = [fill(f.message, seed + 2, depth + 1), fill(f.message, seed + 3, depth + 1)];
      } else if (o?.ipadd)
        m[f.localName] = seed % 2 ? [htonl(0x20010db8), 0, 0, htonl(seed)] : [htonl(0x7f000001 + seed)];
      else m[f.localName] = [scalar(f, seed), scalar(f, seed + 1)];
    } else if (f.fieldKind === "scalar" || f.fieldKind === "enum") {
      m[f.localName] = scalar(f, seed);
    }
  }
  return m;
}

const bytes = (n: number, seed = 3) => new Uint8Array(Array.from({ length: n }, (_, i) => (i * 13 + seed) & 255));

/** Items (entries + payloads) for an image of kind k, every field set. */
export function sampleItems(k: ImageKind, seed = 1): PayloadItem[] {
  const s = k.schema!;
  const e = (i: number): any => fill(s, seed + i);
  switch (k.payload) {
    case "pipe":
      return [0, 1].map((i) => {
        const m = e(i);
        m.bytes = 10 + i;
        return { msg: m, payload: bytes(10 + i, i) };
      });
    case "skq":
      return [0, 1].map((i) => {
        const m = e(i);
        m.length = 100 + i;
        return { msg: m, payload: bytes(100 + i, i) };
      });
    case "tcp": {
      const m = e(0);
      m.inqLen = 7;
      m.outqLen = 90;
      return [{ msg: m, payload: bytes(97) }];
    }
    case "bpfmap":
      return [0, 1].map((i) => {
        const m = e(i);
        m.keysBytes = 8 + i;
        m.valuesBytes = 16;
        return { msg: m, payload: bytes(24 + i, i) };
      });
    case "ipc_shm": {
      const m = e(0);
      m.size = 13n;
      m.inPagemaps = false;
      return [{ msg: m, payload: bytes(13) }];
    }
    case "ipc_sem": {
      const m = e(0);
      m.nsems = 3;
      return [{ msg: m, payload: new Uint8Array([1, 0, 2, 1, 255, 255]) }];
    }
    case "ipc_msg": {
      const m = e(0);
      m.qnum = 2;
      const msgs = [0, 1].map((i) => {
        const x: any = fill(ipc_msgSchema, i);
        x.msize = 5 + i * 9;
        return { msg: x, data: bytes(5 + i * 9, i) };
      });
      return [{ msg: m, payload: ipcMsgPayload(msgs) }];
    }
    case "ghost": {
      const g = e(0);
      g.chunks = true;
      const c = [0, 1].map((i) => {
        const x: any = fill(ghost_chunk_entrySchema, i);
        x.len = BigInt(20 + i);
        return { msg: x, payload: bytes(20 + i, i) };
      });
      return [{ msg: g, payload: new Uint8Array(0) }, ...c];
    }
  }
  if (k.name === "PAGEMAP") {
    const runs = [0, 1].map((i) => {
      const m = e(i);
      m.compatNrPages = 3 + i;
      m.nrPages = BigInt(3 + i);
      return { msg: m, payload: new Uint8Array(0) };
    });
    return [{ msg: fill(PAGEMAP_HEAD_SCHEMA, seed), payload: new Uint8Array(0) }, ...runs];
  }
  const items = [0, 1].map((i) => ({ msg: e(i), payload: new Uint8Array(0) }));
  if (k.name === "CORE") for (const it of items) (it.msg as any).mtype = 1; // X86_64
  return items;
}

export const MSG_KINDS = KINDS.filter((k) => k.header !== "raw");
