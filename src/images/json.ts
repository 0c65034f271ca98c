// crit-style JSON for images: the shape `crit decode --pretty` prints ({"magic": ..., "entries":
// [...]}), with crit's conventions ((criu).hex fields as "0x..", flag fields as "A | B", dev
// numbers as "major:minor", sk/task-state values as names, bytes as MIME base64, unix socket
// names quoted-printable, IP addresses as text, payloads under "extra"), and back.
// Integers that do not fit a double stay bigint; stringifyCrit/parseCritJson keep them exact.
import {
  create,
  isFieldSet,
  getOption,
  hasOption,
  type DescMessage,
  type DescField,
  type Message,
} from "@bufbuild/protobuf";
import { criu } from "./gen/opts_pb";
import { entrySchemaAt, kindByName, type ImageKind } from "./magic";
import { ipc_msgSchema } from "./gen/ns_pb";
import { CriuError } from "../log";
import { ipcMsgPayload, parseIpcMsgPayload, type OpenedImage, type PayloadItem } from "./image";

// ---------- value tables (same meaning as crit's) ----------

type FlagMap = [string, number][];
const FLAG_MAPS: Record<string, FlagMap> = {
  "mmap.prot": [
    ["PROT_READ", 0x1],
    ["PROT_WRITE", 0x2],
    ["PROT_EXEC", 0x4],
  ],
  "mmap.flags": [
    ["MAP_SHARED", 0x1],
    ["MAP_PRIVATE", 0x2],
    ["MAP_ANON", 0x20],
    ["MAP_GROWSDOWN", 0x100],
  ],
  "mmap.status": [
    ["VMA_AREA_NONE", 0],
    ["VMA_AREA_REGULAR", 1 << 0],
    ["VMA_AREA_STACK", 1 << 1],
    ["VMA_AREA_VSYSCALL", 1 << 2],
    ["VMA_AREA_VDSO", 1 << 3],
    ["VMA_AREA_HEAP", 1 << 5],
    ["VMA_FILE_PRIVATE", 1 << 6],
    ["VMA_FILE_SHARED", 1 << 7],
    ["VMA_ANON_SHARED", 1 << 8],
    ["VMA_ANON_PRIVATE", 1 << 9],
    ["VMA_AREA_SYSVIPC", 1 << 10],
    ["VMA_AREA_SOCKET", 1 << 11],
    ["VMA_AREA_VVAR", 1 << 12],
    ["VMA_AREA_AIORING", 1 << 13],
    ["VMA_UNSUPP", 2 ** 31],
  ],
  "rfile.flags": [
    ["O_WRONLY", 0o1],
    ["O_RDWR", 0o2],
    ["O_CREAT", 0o100],
    ["O_EXCL", 0o200],
    ["O_NOCTTY", 0o400],
    ["O_TRUNC", 0o1000],
    ["O_APPEND", 0o2000],
    ["O_NONBLOCK", 0o4000],
    ["O_DSYNC", 0o10000],
    ["FASYNC", 0o20000],
    ["O_DIRECT", 0o40000],
    ["O_LARGEFILE", 0o100000],
    ["O_DIRECTORY", 0o200000],
    ["O_NOFOLLOW", 0o400000],
    ["O_NOATIME", 0o1000000],
    ["O_CLOEXEC", 0o2000000],
  ],
  "pmap.flags": [
    ["PE_PARENT", 1],
    ["PE_LAZY", 2],
    ["PE_PRESENT", 4],
  ],
  "seals.flags": [
    ["F_SEAL_SEAL", 1],
    ["F_SEAL_SHRINK", 2],
    ["F_SEAL_GROW", 4],
    ["F_SEAL_WRITE", 8],
    ["F_SEAL_FUTURE_WRITE", 0x10],
  ],
};

const DICT_MAPS: Record<string, Record<string, Record<number, string>>> = {
  gen: { task_state: { 1: "Alive", 3: "Zombie", 6: "Stopped" } },
  sk: {
    family: { 1: "UNIX", 2: "INET", 10: "INET6", 16: "NETLINK", 17: "PACKET" },
    type: { 1: "STREAM", 2: "DGRAM", 3: "RAW", 5: "SEQPACKET", 10: "PACKET" },
    state: {
      1: "ESTABLISHED",
      2: "SYN_SENT",
      3: "SYN_RECV",
      4: "FIN_WAIT1",
      5: "FIN_WAIT2",
      6: "TIME_WAIT",
      7: "CLOSE",
      8: "CLOSE_WAIT",
      9: "LAST_ACK",
      10: "LISTEN",
    },
    proto: { 0: "IP", 6: "TCP", 17: "UDP", 136: "UDPLITE" },
  },
};

function mapFlags(value: number, map: FlagMap): string {
  const names = map.filter(([, bit]) => (value & bit) !== 0).map(([n]) => n);
  let rest = value >>> 0;
  for (const [, bit] of map) rest = (rest & ~bit) >>> 0;
  if (rest) names.push(`0x${rest.toString(16)}`);
  return names.join(" | ");
}

function unmapFlags(s: string, map: FlagMap): number {
  if (s === "") return 0;
  const m = new Map(map);
  let v = 0;
  for (const part of s.split("|").map((x) => x.trim())) {
    const bit = m.get(part);
    v += bit !== undefined ? bit : Number(pyInt(part));
  }
  return v;
}

// ---------- helpers: base64 (MIME lines), quoted-printable, dev_t, IP ----------

function b64lines(b: Uint8Array): string {
  const s = Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("base64");
  let out = "";
  for (let i = 0; i < s.length; i += 76) out += s.slice(i, i + 76) + "\n";
  return out;
}
const unb64 = (s: string) => new Uint8Array(Buffer.from(s.replace(/\s+/g, ""), "base64"));

const HEX = "0123456789ABCDEF";
/** Quoted-printable as Python's quopri.encodestring (binascii.b2a_qp, text mode). */
export function qpEncode(d: Uint8Array): string {
  const MAX = 76;
  let out: string[] = [];
  let linelen = 0;
  for (let i = 0; i < d.length; i++) {
    const c = d[i];
    const next = i + 1 < d.length ? d[i + 1] : -1;
    const enc =
      c > 126 ||
      c === 0x3d ||
      (c === 0x2e && linelen === 0 && (next === -1 || next === 10 || next === 13 || next === 0)) ||
      ((c === 9 || c === 32) && i + 1 === d.length) ||
      (c < 33 && c !== 13 && c !== 10 && c !== 9 && c !== 32);
    if (enc) {
      if (linelen + 3 >= MAX) {
        out.push("=\n");
        linelen = 0;
      }
      out.push("=" + HEX[c >> 4] + HEX[c & 15]);
      linelen += 3;
    } else if (c === 10 || (c === 13 && next === 10)) {
      linelen = 0;
      const last = out[out.length - 1];
      if (last === " " || last === "\t")
        out[out.length - 1] = "=" + HEX[last.charCodeAt(0) >> 4] + HEX[last.charCodeAt(0) & 15];
      if (c === 13) {
        out.push("\r\n");
        i++;
      } else out.push("\n");
    } else {
      if (i + 1 !== d.length && next !== 10 && linelen + 1 >= MAX) {
        out.push("=\n");
        linelen = 0;
      }
      linelen++;
      out.push(String.fromCharCode(c));
    }
  }
  return out.join("");
}

export function qpDecode(s: string): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const ch = s[i];
    if (ch === "=") {
      if (s[i + 1] === "\n") {
        i += 1;
        continue;
      }
      if (s[i + 1] === "\r" && s[i + 2] === "\n") {
        i += 2;
        continue;
      }
      const h = s.slice(i + 1, i + 3);
      if (/^[0-9A-Fa-f]{2}$/.test(h)) {
        out.push(parseInt(h, 16));
        i += 2;
        continue;
      }
      out.push(0x3d);
    } else out.push(ch.charCodeAt(0) & 0xff);
  }
  return new Uint8Array(out);
}

const KERN_MINORBITS = 20;
function decodeDev(v: number, old: boolean): string {
  if (old) {
    const major = (v >>> 8) & 0xfff,
      minor = (v & 0xff) | ((v >>> 12) & 0xfff00);
    return `${major}:${minor}`;
  }
  return `${Math.floor(v / 2 ** KERN_MINORBITS)}:${v & ((1 << KERN_MINORBITS) - 1)}`;
}
function encodeDev(s: string, old: boolean): number {
  const [ma, mi] = s.split(":").map((x) => parseInt(x, 10));
  if (old) return ((mi & 0xff) | ((ma & 0xfff) << 8) | ((mi & ~0xff) << 12)) >>> 0;
  return (ma * 2 ** KERN_MINORBITS + mi) >>> 0;
}

const ntohl = (v: number) => (((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24)) >>> 0;

export function formatIp(words: number[]): string {
  if (words.length === 1) {
    const v = ntohl(words[0]);
    return [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join(".");
  }
  const h: number[] = [];
  for (let i = 0; i < 4; i++) {
    const v = ntohl(words[i] ?? 0);
    h.push(v >>> 16, v & 0xffff);
  }
  // Python's ipaddress: the longest run (first on ties) of >= 2 zero hextets becomes "::".
  let best = -1,
    bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (h[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && h[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = h.map((x) => x.toString(16));
  if (bestLen > 1) {
    const left = hex.slice(0, best).join(":"),
      right = hex.slice(best + bestLen).join(":");
    return `${left}::${right}`;
  }
  return hex.join(":");
}

export function parseIp(s: string): number[] {
  const htonl = ntohl;
  if (!s.includes(":")) {
    const p = s.split(".").map((x) => parseInt(x, 10));
    if (p.length !== 4 || p.some((x) => !(x >= 0 && x <= 255))) throw new CriuError("json", `bad IPv4 address '${s}'`);
    return [htonl(((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0)];
  }
  let tail: number[] = [];
  let str = s;
  const m = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (m) {
    const v = ntohl(parseIp(m[1])[0]);
    tail = [v >>> 16, v & 0xffff];
    str = s.slice(0, -m[1].length) + "0:0";
  }
  const [l, r] = str.includes("::") ? str.split("::") : [str, undefined];
  const lh = l ? l.split(":") : [];
  const rh = r !== undefined && r !== "" ? r.split(":") : [];
  const fill = r !== undefined ? 8 - lh.length - rh.length : 0;
  const h = [...lh, ...Array(fill).fill("0"), ...rh].map((x) => parseInt(x, 16));
  if (h.length !== 8 || h.some((x) => !(x >= 0 && x <= 0xffff))) throw new CriuError("json", `bad IPv6 address '${s}'`);
  if (tail.length) {
    h[6] = tail[0];
    h[7] = tail[1];
  }
  const w: number[] = [];
  for (let i = 0; i < 4; i++) w.push(htonl(((h[2 * i] << 16) | h[2 * i + 1]) >>> 0));
  return w;
}

/** Python's int(s, 0): "0x1f", "0o17", "0b1", "42", "-3". */
function pyInt(s: string): bigint {
  const t = s.trim().replace(/_/g, "");
  const neg = t.startsWith("-");
  const u = neg || t.startsWith("+") ? t.slice(1) : t;
  if (!/^(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|[1-9][0-9]*|0+)$/.test(u))
    throw new CriuError("json", `bad integer '${s}'`);
  const v = BigInt(u.startsWith("0o") || u.startsWith("0O") ? "0o" + u.slice(2) : u);
  return neg ? -v : v;
}

// ---------- message -> crit dict ----------

const is64 = (f: DescField) => f.scalar !== undefined && [3, 4, 6, 16, 18].includes(f.scalar);
/** A generated message's fields by localName (the generic walkers below read and set them by descriptor). */
const fieldsOf = (m: Message) => m as Record<string, unknown>;
/** JSON values as parseCritJson returns them (bigint for integers beyond 2^53). */
export type CritJson = null | boolean | number | bigint | string | CritJson[] | { [k: string]: CritJson };
type CritDict = { [k: string]: CritJson };
const asDict = (v: CritJson | undefined, what: string): CritDict => {
  if (v === null || v === undefined || typeof v !== "object" || Array.isArray(v))
    throw new CriuError("json", `${what}: expected an object`);
  return v;
};
const asList = (v: CritJson | undefined, what: string): CritJson[] => {
  if (!Array.isArray(v)) throw new CriuError("json", `${what}: expected a list`);
  return v;
};
const opts = (f: DescField) => (hasOption(f, criu) ? getOption(f, criu) : undefined);
const sorted = (s: DescMessage) => [...s.fields].sort((a, b) => a.number - b.number);

function scalarOut(f: DescField, val: unknown, pretty: boolean, hex: boolean): unknown {
  const o = opts(f);
  if (f.enum) {
    const ev = f.enum.values.find((x) => x.number === val);
    return ev ? ev.name : null;
  }
  if (f.scalar === 12) return o?.conv === "unix_name" ? qpEncode(val as Uint8Array) : b64lines(val as Uint8Array);
  if (f.scalar === 9 || f.scalar === 8) return val;
  if (f.scalar === 1 || f.scalar === 2) return val;
  const v = val as number | bigint;
  if (pretty) {
    if (hex || o?.hex) return (v < 0 ? "-0x" : "0x") + (v < 0 ? -v : v).toString(16);
    if (o?.dev) return decodeDev(Number(v), !!o.odev);
    if (o?.flags) {
      const map = FLAG_MAPS[o.flags];
      return map ? mapFlags(Number(v), map) : "0x" + v.toString(16);
    }
    if (o?.dict) {
      const name = DICT_MAPS[o.dict]?.[f.name]?.[Number(v)];
      if (name !== undefined) return name;
    }
  }
  return is64(f) ? normInt(v) : v;
}

/** bigint if needed, else number (JSON-friendly). */
function normInt(v: bigint | number): bigint | number {
  return typeof v === "bigint" && v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
    ? Number(v)
    : v;
}

function messageToDict(schema: DescMessage, msg: Message, pretty = true, hex = false): Record<string, unknown> {
  const d: Record<string, unknown> = {};
  for (const f of sorted(schema)) {
    const val = fieldsOf(msg)[f.localName];
    if (f.fieldKind === "list") {
      const v = val as unknown[];
      if (!v.length) continue;
      const o = opts(f);
      if (pretty && o?.ipadd) {
        d[f.name] = [formatIp(v as number[])];
        continue;
      }
      const h = hex || !!o?.hex;
      d[f.name] =
        f.listKind === "message"
          ? v.map((m) => messageToDict(f.message, m as Message, pretty, h))
          : v.map((x) => scalarOut(f, x, pretty, h));
    } else if (f.fieldKind === "message") {
      if (val === undefined) continue;
      d[f.name] = messageToDict(f.message, val as Message, pretty, hex || !!opts(f)?.hex);
    } else if (f.fieldKind === "map") {
      continue;
    } else {
      if (!isFieldSet(msg, f)) continue;
      d[f.name] = scalarOut(f, val, pretty, hex);
    }
  }
  return d;
}

function payloadOut(k: ImageKind, m: Message, p: Uint8Array): unknown {
  const msg = m as { inqLen?: number; qnum?: number };
  switch (k.payload) {
    case "pipe":
    case "skq":
    case "bpfmap":
      return b64lines(p);
    case "tcp":
      return { inq: b64lines(p.subarray(0, msg.inqLen ?? 0)), outq: b64lines(p.subarray(msg.inqLen ?? 0)) };
    case "ipc_shm":
      return b64lines(p);
    case "ipc_sem": {
      const r: number[] = [];
      for (let i = 0; i + 1 < p.length; i += 2) r.push(p[i] | (p[i + 1] << 8));
      return r;
    }
    case "ipc_msg": {
      const r: unknown[] = [];
      for (const m of parseIpcMsgPayload(p, msg.qnum ?? 0)) {
        r.push(messageToDict(ipc_msgSchema, m.msg, false));
        r.push(b64lines(m.data));
      }
      return r;
    }
  }
  return undefined;
}

/** An opened image as crit's JSON object: {magic, entries}. */
export function toCritJson(img: OpenedImage, pretty = true): { magic: string; entries: Record<string, unknown>[] } {
  const k = kindByName.get(img.kind)!;
  const entries = img.entries.map((m, i) => {
    const schema = entrySchemaAt(k, i);
    const d = messageToDict(schema, m, pretty);
    const p = img.payloads?.[i];
    if (k.payload === "ghost") {
      if (i > 0 || !(m as { chunks?: boolean }).chunks) d.extra = b64lines(p ?? new Uint8Array());
    } else if (k.payload !== "none" && p && !(k.payload === "ipc_shm" && (m as { inPagemaps?: boolean }).inPagemaps)) {
      d.extra = payloadOut(k, m, p);
    }
    return d;
  });
  return { magic: img.kind, entries };
}

// ---------- crit dict -> message ----------

function scalarIn(f: DescField, v: CritJson | undefined): unknown {
  const o = opts(f);
  if (f.enum) {
    const ev = f.enum.values.find((x) => x.name === v);
    if (!ev) throw new CriuError("json", `${f.name}: unknown enum value ${JSON.stringify(v)}`);
    return ev.number;
  }
  if (f.scalar === 12) return o?.conv === "unix_name" ? qpDecode(String(v)) : unb64(String(v));
  if (f.scalar === 9) return String(v);
  if (f.scalar === 8) return !!v;
  if (f.scalar === 1 || f.scalar === 2) return Number(v);
  let n: bigint;
  if (typeof v === "string") {
    if (o?.dev) n = BigInt(encodeDev(v, !!o.odev));
    else if (o?.flags && FLAG_MAPS[o.flags]) n = BigInt(unmapFlags(v, FLAG_MAPS[o.flags]));
    else if (o?.dict) {
      const m = DICT_MAPS[o.dict]?.[f.name] ?? {};
      const hit = Object.entries(m).find(([, name]) => name === v);
      n = hit ? BigInt(hit[0]) : pyInt(v);
    } else n = pyInt(v);
  } else n = BigInt(v as number | bigint | boolean);
  return is64(f) ? n : Number(n);
}

function dictToMessage(schema: DescMessage, d: CritDict): Message {
  const created = create(schema);
  const msg = fieldsOf(created);
  for (const f of schema.fields) {
    if (!(f.name in d)) continue;
    const v = d[f.name];
    if (f.fieldKind === "list") {
      if (!Array.isArray(v)) throw new CriuError("json", `${schema.typeName}.${f.name}: expected a list`);
      if (v.length && typeof v[0] === "string" && opts(f)?.ipadd) {
        msg[f.localName] = parseIp(v[0] as string);
        continue;
      }
      msg[f.localName] =
        f.listKind === "message"
          ? v.map((x) => dictToMessage(f.message, asDict(x, `${schema.typeName}.${f.name}`)))
          : v.map((x) => scalarIn(f, x));
    } else if (f.fieldKind === "message") {
      msg[f.localName] = dictToMessage(f.message, asDict(v ?? {}, `${schema.typeName}.${f.name}`));
    } else if (f.fieldKind !== "map") {
      msg[f.localName] = scalarIn(f, v);
    }
  }
  return created;
}

function payloadIn(k: ImageKind, msg: Message, extra: CritJson): Uint8Array {
  const what = `${k.name} extra`;
  switch (k.payload) {
    case "pipe":
    case "skq":
    case "ipc_shm":
    case "bpfmap": {
      const b = unb64(extra as string);
      return k.payload === "ipc_shm" ? b.subarray(0, Number((msg as { size?: bigint | number }).size)) : b;
    }
    case "tcp": {
      const q = asDict(extra, what);
      const a = unb64(q.inq as string),
        b = unb64(q.outq as string);
      const r = new Uint8Array(a.length + b.length);
      r.set(a);
      r.set(b, a.length);
      return r;
    }
    case "ipc_sem": {
      const l = asList(extra, what) as number[];
      const r = new Uint8Array(l.length * 2);
      l.forEach((x, i) => {
        r[2 * i] = x & 255;
        r[2 * i + 1] = (x >> 8) & 255;
      });
      return r;
    }
    case "ipc_msg": {
      const l = asList(extra, what);
      const items: { msg: Message; data: Uint8Array }[] = [];
      for (let i = 0; i < l.length; i += 2)
        items.push({ msg: dictToMessage(ipc_msgSchema, asDict(l[i], what)), data: unb64(l[i + 1] as string) });
      return ipcMsgPayload(items);
    }
  }
  return new Uint8Array(0);
}

/** crit JSON ({magic, entries}) -> image kind + items, ready for writeImageWithPayload / encodeImage. */
export function fromCritJson(json: CritJson): {
  kind: string;
  items: PayloadItem[];
} {
  const j = json !== null && typeof json === "object" && !Array.isArray(json) ? json : undefined;
  const magic = j?.magic;
  const k = typeof magic === "string" ? kindByName.get(magic) : undefined;
  if (!j || !k || !k.schema) throw new CriuError("json", `unknown or raw image magic '${magic}'`);
  const items = asList(j.entries ?? [], "entries").map((e, i) => {
    const { extra, ...rest } = asDict(e, `entry ${i}`);
    const schema = entrySchemaAt(k, i);
    const msg = dictToMessage(schema, rest);
    let payload: Uint8Array = new Uint8Array(0);
    if (k.payload === "ghost") payload = extra !== undefined ? unb64(extra as string) : payload;
    else if (k.payload !== "none" && extra !== undefined) payload = payloadIn(k, msg, extra);
    return { msg, payload };
  });
  return { kind: k.name, items };
}

// ---------- Python-compatible JSON text ----------

function pyStr(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"') out += '\\"';
    else if (ch === "\\") out += "\\\\";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (ch === "\b") out += "\\b";
    else if (ch === "\f") out += "\\f";
    else if (c >= 0x20 && c <= 0x7e) out += ch;
    else if (c > 0xffff) {
      const v = c - 0x10000;
      out +=
        "\\u" +
        (0xd800 + (v >> 10)).toString(16).padStart(4, "0") +
        "\\u" +
        (0xdc00 + (v & 0x3ff)).toString(16).padStart(4, "0");
    } else out += "\\u" + c.toString(16).padStart(4, "0");
  }
  return out + '"';
}

/** JSON text as Python's json.dumps(obj, indent=4) (crit --pretty); bigints printed exactly. */
export function stringifyCrit(v: unknown, indent = 4, level = 0): string {
  const pad = (n: number) => " ".repeat(indent * n);
  if (v === null || v === undefined) return "null";
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(v);
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "string") return pyStr(v);
  if (Array.isArray(v)) {
    if (!v.length) return "[]";
    return (
      "[\n" + v.map((x) => pad(level + 1) + stringifyCrit(x, indent, level + 1)).join(",\n") + "\n" + pad(level) + "]"
    );
  }
  const ents = Object.entries(v as object);
  if (!ents.length) return "{}";
  return (
    "{\n" +
    ents.map(([k, x]) => pad(level + 1) + pyStr(k) + ": " + stringifyCrit(x, indent, level + 1)).join(",\n") +
    "\n" +
    pad(level) +
    "}"
  );
}

/** JSON text as Python's json.dumps(obj) with no indent (crit decode without --pretty): ", " and ": ". */
export function stringifyCritCompact(v: unknown): string {
  if (v === null || v === undefined) return "null";
  if (Array.isArray(v)) return "[" + v.map(stringifyCritCompact).join(", ") + "]";
  if (typeof v === "object" && typeof v !== "bigint") {
    return (
      "{" +
      Object.entries(v as object)
        .map(([k, x]) => pyStr(k) + ": " + stringifyCritCompact(x))
        .join(", ") +
      "}"
    );
  }
  return stringifyCrit(v);
}

/** JSON.parse that keeps integers beyond 2^53 exact (as bigint). */
export function parseCritJson(text: string): CritJson {
  let i = 0;
  const ws = () => {
    while (i < text.length && /\s/.test(text[i])) i++;
  };
  const fail = (what: string): never => {
    throw new CriuError("json", `bad JSON at offset ${i}: ${what}`);
  };
  const val = (): CritJson => {
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      const o: CritDict = {};
      ws();
      if (text[i] === "}") {
        i++;
        return o;
      }
      for (;;) {
        ws();
        const k = str();
        ws();
        if (text[i++] !== ":") fail("expected ':'");
        o[k] = val();
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "}") {
          i++;
          return o;
        }
        fail("expected ',' or '}'");
      }
    }
    if (c === "[") {
      i++;
      const a: CritJson[] = [];
      ws();
      if (text[i] === "]") {
        i++;
        return a;
      }
      for (;;) {
        a.push(val());
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "]") {
          i++;
          return a;
        }
        fail("expected ',' or ']'");
      }
    }
    if (c === '"') return str();
    if (text.startsWith("true", i)) {
      i += 4;
      return true;
    }
    if (text.startsWith("false", i)) {
      i += 5;
      return false;
    }
    if (text.startsWith("null", i)) {
      i += 4;
      return null;
    }
    const m = /^-?\d+(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 64));
    if (!m) fail("unexpected character");
    i += m![0].length;
    if (m![1] || m![2]) return Number(m![0]);
    const b = BigInt(m![0]);
    return b >= BigInt(Number.MIN_SAFE_INTEGER) && b <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(b) : b;
  };
  const str = (): string => {
    if (text[i] !== '"') fail("expected string");
    const start = i;
    i++;
    while (i < text.length && text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
    i++;
    return JSON.parse(text.slice(start, i));
  };
  const r = val();
  ws();
  if (i < text.length) fail("trailing data");
  return r;
}
