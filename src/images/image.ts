// Reading and writing CRIU image files: header magics, then (u32 length + message) entries,
// some followed by raw payload. See magic.ts for the kinds.
import {
  create,
  isFieldSet,
  type DescField,
  type DescMessage,
  type Message,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import { existsSync, readFileSync } from "../sys/fs";
import { writeNewFile } from "./safefs";
import { PbWriter, encodeInto } from "./encode";
import { decodeMessage } from "./decode";
import { join } from "../sys/path";
import { CriuError, errorMessage, log } from "../log";
import { jitIfLarge, WORK_JIT } from "../jit";
import {
  IMG_COMMON_MAGIC,
  IMG_SERVICE_MAGIC,
  kindByMagic,
  kindByName,
  PAGEMAP_HEAD_SCHEMA,
  entrySchemaAt,
  type ImageKind,
  type MessageKind,
  type EntryOf,
} from "./magic";
import {
  ghost_chunk_entrySchema,
  type bpfmap_data_entry,
  type ghost_chunk_entry,
  type ghost_file_entry,
  type pipe_data_entry,
} from "./gen/files_pb";
import { ipc_msgSchema, type ipc_msg, type ipc_msg_entry, type ipc_sem_entry, type ipc_shm_entry } from "./gen/ns_pb";
import type { sk_packet_entry, tcp_stream_entry } from "./gen/sockets_pb";
import { pagemap_entrySchema, type pagemap_entry } from "./gen/mm_pb";
import { errnoText } from "../sys/errno";

export class ImageError extends CriuError {
  constructor(
    public file: string,
    public offset: number,
    what: string
  ) {
    super("image", `${file}: ${what} at offset ${offset}`);
    this.name = "ImageError";
  }
}

export interface PayloadItem<T extends Message = Message> {
  msg: T;
  payload: Uint8Array;
}

/** The msg of a raw image's one item (pages-N.img has no entries, only bytes): undefined at run
 * time; typed as a message so that every other item's msg needs no check (raw kinds are read for
 * their payload only). */
const RAW_NO_MESSAGE = undefined as unknown as Message;

export interface OpenedImage {
  kind: string;
  entries: Message[];
  payloads?: Uint8Array[];
}

const EMPTY: Uint8Array = new Uint8Array(0);

function getKind(name: string): ImageKind {
  const k = kindByName.get(name);
  if (!k) throw new CriuError("image", `unknown image kind '${name}'`);
  return k;
}

// ---------- required-field filling (protobuf-es refuses to encode unset proto2 required) ----------

function zeroOf(f: DescField): unknown {
  if (f.fieldKind === "enum") return f.getDefaultValue?.() ?? f.enum.values[0].number;
  if (f.fieldKind !== "scalar") return undefined; // (fillPlan lists no other kind here)
  const d = f.getDefaultValue?.();
  if (d !== undefined) return d;
  switch (f.scalar) {
    case 9:
      return ""; // string
    case 12:
      return new Uint8Array(0); // bytes
    case 8:
      return false; // bool
    case 3:
    case 4:
    case 6:
    case 16:
    case 18:
      return 0n; // 64-bit ints
    default:
      return 0;
  }
}

/** Give every unset required field its default, recursively, so the message can be encoded
 *  (the fields to look at are listed once per message type). */
export function fillRequired(schema: DescMessage, msg: Message): void {
  const fields = msg as Record<string, unknown>; // set by descriptor, as protobuf-es's reflection does
  for (const f of fillPlan(schema)) {
    const name = f.localName;
    if (f.fieldKind === "message") {
      if (fields[name] === undefined && f.presence === 3) fields[name] = create(f.message);
      if (fields[name] !== undefined) fillRequired(f.message, fields[name] as Message);
    } else if (f.fieldKind === "list") {
      if (f.listKind === "message") for (const m of fields[name] as Message[]) fillRequired(f.message, m);
    } else if (!isFieldSet(msg, f)) fields[name] = zeroOf(f);
  }
}
const fillPlans = new WeakMap<DescMessage, DescField[]>();
/** the fields fillRequired looks at: messages, lists of messages, required scalars and enums */
function fillPlan(schema: DescMessage): DescField[] {
  let p = fillPlans.get(schema);
  if (!p) {
    p = schema.fields.filter(
      (f) =>
        f.fieldKind === "message" ||
        (f.fieldKind === "list" && f.listKind === "message") ||
        ((f.fieldKind === "scalar" || f.fieldKind === "enum") && f.presence === 3)
    );
    fillPlans.set(schema, p);
  }
  return p;
}

function schemaOfMsg(msg: Message, fallback?: DescMessage): DescMessage {
  // a plain object (no $typeName: a message's fields only) is of the image's own kind
  return fallback && (fallback.typeName === msg.$typeName || msg.$typeName === undefined)
    ? fallback
    : msg.$typeName === PAGEMAP_HEAD_SCHEMA.typeName
      ? PAGEMAP_HEAD_SCHEMA
      : msg.$typeName === ghost_chunk_entrySchema.typeName
        ? ghost_chunk_entrySchema
        : msg.$typeName === ipc_msgSchema.typeName
          ? ipc_msgSchema
          : (() => {
              throw new CriuError("image", `message ${msg.$typeName} does not belong to this image`);
            })();
}

// ---------- encoding ----------

class Out {
  w = new PbWriter();
  u32(v: number) {
    this.w.u32le(v);
  }
  bytes(b: Uint8Array) {
    this.w.raw(b);
  }
  pad(n: number) {
    if (n > 0) this.w.raw(new Uint8Array(n));
  }
  /** u32 length, then the message (unset required fields with their defaults, as fillRequired) */
  entry(schema: DescMessage, msg: Message) {
    // a message made by create() gets its defaults as well (callers may read them back); a plain
    // object (the large tables of a dump: files, fdinfo) is encoded as it is
    if (msg.$typeName !== undefined) fillRequired(schema, msg);
    const w = this.w;
    w.u32le(0);
    const start = w.pos;
    encodeInto(w, schema, msg);
    new DataView(w.buf.buffer).setUint32(start - 4, w.pos - start, true);
  }
  concat(): Uint8Array {
    return this.w.finish();
  }
}

function header(out: Out, k: ImageKind) {
  if (k.header === "raw") return;
  if (k.header === "common") out.u32(IMG_COMMON_MAGIC);
  else if (k.header === "service") out.u32(IMG_SERVICE_MAGIC);
  out.u32(k.magic);
}

const roundUp = (x: number, y: number) => Math.ceil(x / y) * y;

/** The entry fields that give a payload's size: which ones, the kind's payload says. */
type Fields<T extends Message> = Omit<T, "$typeName" | "$unknown">;
type PayloadHead = Fields<pipe_data_entry> &
  Fields<sk_packet_entry> &
  Fields<tcp_stream_entry> &
  Fields<ipc_shm_entry> &
  Fields<ipc_sem_entry> &
  Fields<ipc_msg_entry> &
  Fields<bpfmap_data_entry> &
  Fields<ghost_file_entry> &
  Fields<ghost_chunk_entry>;

function writePayload(out: Out, k: ImageKind, m: Message, payload: Uint8Array, where: string) {
  const msg = m as Message & PayloadHead;
  const need = (n: number) => {
    if (payload.length !== n)
      throw new CriuError("image", `${where}: payload is ${payload.length} bytes, entry says ${n}`);
  };
  switch (k.payload) {
    case "pipe":
      need(msg.bytes);
      out.bytes(payload);
      break;
    case "skq":
      need(msg.length);
      out.bytes(payload);
      break;
    case "tcp":
      need(msg.inqLen + msg.outqLen);
      out.bytes(payload);
      break;
    case "ipc_shm":
      if (msg.inPagemaps) {
        need(0);
        break;
      }
      need(Number(msg.size));
      out.bytes(payload);
      out.pad(roundUp(payload.length, 4) - payload.length);
      break;
    case "ipc_sem":
      need(msg.nsems * 2);
      out.bytes(payload);
      out.pad(roundUp(payload.length, 8) - payload.length);
      break;
    case "ipc_msg":
      out.bytes(payload);
      break; // already framed (see ipcMsgPayload)
    case "bpfmap":
      need(msg.keysBytes + msg.valuesBytes);
      out.bytes(payload);
      break;
    default:
      if (payload.length) throw new CriuError("image", `${where}: ${k.name} entries carry no payload`);
  }
}

function encode(k: ImageKind, items: PayloadItem[], file: string): Uint8Array {
  const out = new Out();
  header(out, k);
  if (k.header === "raw") {
    for (const it of items) out.bytes(it.payload);
    return out.concat();
  }
  items.forEach((it, i) => {
    const schema = schemaOfMsg(it.msg, entrySchemaAt(k, i));
    out.entry(schema, it.msg);
    if (k.payload === "ghost") {
      const g = items[0].msg as ghost_file_entry;
      if (i === 0 && g.chunks && it.payload.length)
        throw new CriuError("image", `${file}: chunked ghost file: data goes with the chunk entries`);
      if (i > 0 && (it.msg as ghost_chunk_entry).len !== BigInt(it.payload.length))
        throw new CriuError("image", `${file}: ghost chunk len differs from its payload`);
      out.bytes(it.payload);
    } else writePayload(out, k, it.msg, it.payload, file);
  });
  return out.concat();
}

/** Images are written as new files, 0600, never through a symlink (a dump writes them into its
 * private stage, see safefs.ts); one already there is replaced. */
function writeFileAtomic(path: string, data: Uint8Array) {
  writeNewFile(path, data, true);
}

/** Write already encoded image bytes (fast paths such as pagemap.ts) into dir/file. */
export function writeImageBytes(dir: string, file: string, data: Uint8Array): void {
  writeFileAtomic(join(dir, file), data);
}

/** Write an image of `kind` (crit's magic name) holding `entries` into dir/file. */
export function writeImage<N extends MessageKind>(dir: string, file: string, kind: N, entries: EntryOf<N>[]): void {
  const k = getKind(kind);
  if (k.payload !== "none" && k.payload !== "ghost" && entries.length)
    throw new CriuError("image", `${file}: ${kind} entries need payloads (use writeImageWithPayload)`);
  writeFileAtomic(
    join(dir, file),
    encode(
      k,
      entries.map((msg) => ({ msg, payload: EMPTY })),
      file
    )
  );
}

/**
 * An entry for writeImage as its plain init object: encodeInto writes the same bytes for it as for
 * the message create() would make of it (test/encode.test.ts, every message type), without
 * create()'s copy and its initializer compiled per message type. Only for an image whose kind has
 * the entry's own schema (not a pagemap head, a ghost chunk or an ipc msg: they are told apart by
 * their $typeName).
 */
export function plainEntry<T extends DescMessage>(_schema: T, init: MessageInitShape<T>): MessageShape<T> {
  return init as unknown as MessageShape<T>;
}

/** Write an image whose entries are each followed by raw bytes (pipes-data, sk-queues, ...). */
export function writeImageWithPayload<N extends MessageKind>(
  dir: string,
  file: string,
  kind: N,
  items: PayloadItem<EntryOf<N>>[]
): void {
  const k = getKind(kind);
  writeFileAtomic(join(dir, file), encode(k, items, file));
}

/** Encode an image to bytes without writing it (tests, streaming). */
export function encodeImage(kind: string, items: PayloadItem[] | Message[]): Uint8Array {
  const k = getKind(kind);
  const its = (items as (PayloadItem | Message)[]).map(
    (x): PayloadItem =>
      "msg" in x && "payload" in x && !("$typeName" in x) ? x : { msg: x as Message, payload: EMPTY }
  );
  return encode(k, its, `<${kind}>`);
}

// ---------- decoding ----------

function u32(buf: Uint8Array, off: number): number {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getUint32(off, true);
}

function detect(buf: Uint8Array, file: string): { k: ImageKind; off: number } {
  if (buf.length < 4) throw new ImageError(file, 0, `truncated image header (${buf.length} bytes)`);
  let m = u32(buf, 0),
    off = 4;
  let outer: number | undefined;
  if (m === IMG_COMMON_MAGIC || m === IMG_SERVICE_MAGIC) {
    if (buf.length < 8) throw new ImageError(file, 4, "truncated image header");
    outer = m;
    m = u32(buf, 4);
    off = 8;
  }
  const k = kindByMagic.get(m);
  if (!k)
    throw new ImageError(
      file,
      off - 4,
      `unknown magic 0x${m.toString(16)} (not a CRIU image, or a raw image like pages-N.img)`
    );
  const wantOuter = k.header === "common" ? IMG_COMMON_MAGIC : k.header === "service" ? IMG_SERVICE_MAGIC : undefined;
  if (outer !== wantOuter)
    throw new ImageError(
      file,
      0,
      `bad header for ${k.name}: ${outer === undefined ? "missing" : "unexpected"} leading magic`
    );
  return { k, off };
}

class In {
  constructor(
    public buf: Uint8Array,
    public off: number,
    public file: string
  ) {}
  get eof() {
    return this.off >= this.buf.length;
  }
  take(n: number, what: string): Uint8Array {
    if (this.off + n > this.buf.length)
      throw new ImageError(
        this.file,
        this.off,
        `truncated ${what}: need ${n} bytes, have ${this.buf.length - this.off}`
      );
    const r = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return r;
  }
  entry<T extends Message>(schema: DescMessage): T {
    const at = this.off;
    const lenb = this.take(4, "entry size");
    const n = u32(lenb, 0);
    if (n > this.buf.length - this.off)
      throw new ImageError(
        this.file,
        at,
        `truncated ${schema.typeName} entry: size ${n}, ${this.buf.length - this.off} bytes left`
      );
    const body = this.take(n, "entry");
    try {
      return decodeMessage<T>(schema, body);
    } catch (e) {
      throw new ImageError(this.file, at, `garbage ${schema.typeName} entry (${errorMessage(e).split("\n")[0]})`);
    }
  }
}

function decode(k: ImageKind, buf: Uint8Array, off: number, file: string, wantPayload: boolean): PayloadItem[] {
  const r = new In(buf, off, file);
  const items: PayloadItem[] = [];
  if (k.header === "raw") return [{ msg: RAW_NO_MESSAGE, payload: buf }];
  if (k.payload === "ghost") {
    if (r.eof) return items;
    const g = r.entry<ghost_file_entry>(k.schema!);
    if (!g.chunks) {
      items.push({ msg: g, payload: r.take(buf.length - r.off, "ghost data") });
      return items;
    }
    items.push({ msg: g, payload: EMPTY });
    while (!r.eof) {
      const c = r.entry<ghost_chunk_entry>(ghost_chunk_entrySchema);
      items.push({ msg: c, payload: r.take(Number(c.len), "ghost chunk data") });
    }
    return items;
  }
  let first = true;
  while (!r.eof) {
    const schema = k.name === "PAGEMAP" && first ? PAGEMAP_HEAD_SCHEMA : k.schema!;
    first = false;
    const msg = r.entry<Message & PayloadHead>(schema);
    let payload: Uint8Array = EMPTY;
    switch (k.payload) {
      case "pipe":
        payload = r.take(msg.bytes, "pipe data");
        break;
      case "skq":
        payload = r.take(msg.length, "queued packet");
        break;
      case "tcp":
        payload = r.take(msg.inqLen + msg.outqLen, "tcp queues");
        break;
      case "bpfmap":
        payload = r.take(msg.keysBytes + msg.valuesBytes, "bpf map keys and values");
        break;
      case "ipc_shm":
        if (!msg.inPagemaps) {
          const n = Number(msg.size);
          payload = r.take(n, "shm data");
          r.take(roundUp(n, 4) - n, "shm padding");
        }
        break;
      case "ipc_sem": {
        const n = msg.nsems * 2;
        payload = r.take(n, "semaphores");
        r.take(roundUp(n, 8) - n, "sem padding");
        break;
      }
      case "ipc_msg": {
        const start = r.off;
        for (let i = 0; i < msg.qnum; i++) {
          const m = r.entry<ipc_msg>(ipc_msgSchema);
          r.take(roundUp(m.msize, 8), "message data");
        }
        payload = buf.subarray(start, r.off);
        break;
      }
    }
    items.push({ msg, payload: wantPayload ? payload : EMPTY });
  }
  return items;
}

/** An image this large holds thousands of entries: their decoding loops tier up (src/jit.ts). */
export const LARGE_IMAGE = 64 << 10;

/**
 * XXH64 of the images read while a restore loads its images (loadImages: trackReads ... the
 * manifest check), by path as read: criu-bun.sum is checked against the bytes decoded instead of
 * each image read a second time (a sleep's restore read 12 files twice), so it covers the very
 * bytes in use. Only between trackReads and endReads: a path read by an earlier restore of the same
 * process (service, migrate) may name another file now.
 */
let reads: Map<string, bigint> | undefined;
export function trackReads(): Map<string, bigint> {
  reads = new Map();
  return reads;
}
export function endReads() {
  reads = undefined;
}

function load(path: string): Uint8Array {
  let b: Uint8Array;
  try {
    b = new Uint8Array(readFileSync(path));
  } catch (e) {
    throw new CriuError("image", `${path}: cannot read: ${errnoText(e)}`);
  }
  reads?.set(path, Bun.hash.xxHash64(b));
  if (jitIfLarge(b.length, LARGE_IMAGE)) log.debug(`JIT tier-up thresholds x${WORK_JIT} from here on (${path})`);
  return b;
}

function readAs(dir: string, file: string, kind: string, wantPayload: boolean): PayloadItem[] {
  const k = getKind(kind);
  const path = join(dir, file);
  const buf = load(path);
  if (k.header === "raw") return [{ msg: RAW_NO_MESSAGE, payload: buf }];
  const { k: got, off } = detect(buf, path);
  if (got.magic !== k.magic)
    throw new ImageError(
      path,
      off - 4,
      `wrong magic: expected ${kind} (0x${k.magic.toString(16)}), found ${got.name} (0x${got.magic.toString(16)})`
    );
  return decode(k, buf, off, path, wantPayload);
}

/** Read all entries of dir/file, checking its magic is `kind`'s. */
export function readImage<N extends MessageKind>(dir: string, file: string, kind: N): EntryOf<N>[] {
  return readAs(dir, file, kind, false).map((i) => i.msg as EntryOf<N>);
}

/** Read entries with the raw payload that follows each one. */
export function readImagePayloads<N extends MessageKind>(
  dir: string,
  file: string,
  kind: N
): PayloadItem<EntryOf<N>>[] {
  return readAs(dir, file, kind, true) as PayloadItem<EntryOf<N>>[];
}

/** Decode bytes of an image (kind detected from its magic). */
export function decodeImage(buf: Uint8Array, name = "<image>"): OpenedImage {
  const { k, off } = detect(buf, name);
  const items = decode(k, buf, off, name, true);
  const res: OpenedImage = { kind: k.name, entries: items.map((i) => i.msg) };
  if (k.payload !== "none") res.payloads = items.map((i) => i.payload);
  return res;
}

/** Open any image file and detect its kind from the magic (for `show`). */
export function openImage(path: string): OpenedImage {
  return decodeImage(load(path), path);
}

export function imageExists(dir: string, file: string): boolean {
  return existsSync(join(dir, file));
}

/** Pages of a pagemap entry: CRIU >= 4.2 field nr_pages, else the old compat_nr_pages. */
export function pagemapNrPages(e: pagemap_entry): number {
  if (isFieldSet(e, pagemap_entrySchema.field.nrPages)) return Number(e.nrPages);
  return e.compatNrPages;
}

/** Build a pagemap_entry's page count for writing: both fields (compat when it fits u32). */
export function pagemapCounts(nr: number | bigint): { nrPages: bigint; compatNrPages: number } {
  const n = BigInt(nr);
  return { nrPages: n, compatNrPages: n <= 0xffffffffn ? Number(n) : 0 };
}

/** Frame queued SysV messages into an ipcns-msg payload. */
export function ipcMsgPayload(items: { msg: Message; data: Uint8Array }[]): Uint8Array {
  const out = new Out();
  for (const it of items) {
    const m = it.msg as ipc_msg;
    out.entry(ipc_msgSchema, m);
    out.bytes(it.data.subarray(0, m.msize));
    out.pad(roundUp(m.msize, 8) - Math.min(m.msize, it.data.length));
  }
  return out.concat();
}

/** Split an ipcns-msg payload into its messages. */
export function parseIpcMsgPayload(
  payload: Uint8Array,
  qnum: number,
  file = "<ipcns-msg>"
): { msg: Message; data: Uint8Array }[] {
  const r = new In(payload, 0, file);
  const res: { msg: Message; data: Uint8Array }[] = [];
  for (let i = 0; i < qnum; i++) {
    const m = r.entry<ipc_msg>(ipc_msgSchema);
    const d = r.take(roundUp(m.msize, 8), "message data");
    res.push({ msg: m, data: d.subarray(0, m.msize) });
  }
  return res;
}
