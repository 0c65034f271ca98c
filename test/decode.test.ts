// criu-bun's decoder (src/images/decode.ts) against protobuf-es's fromBinary: the same message
// objects (prototype defaults, own fields and their order, $unknown, bigint/number/bytes types) or
// the same error, on
// - every message type of the images, every field set (test/images-fill.ts) and random ones,
// - the images of real processes dumped by criu-bun and by CRIU 4.2 (when it is there),
// - those entries truncated at every length and with bytes changed at every offset,
// - wire data protobuf-es reads leniently: unknown fields of every wire type, closed enums' unknown
//   values, a packed list where an unpacked one is declared and the other way round, a message
//   field given twice (merged), wrong wire types for known fields.
import { afterAll, describe, expect, test } from "bun:test";
import { fromBinary, toBinary, type DescMessage } from "@bufbuild/protobuf";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { decodeMessage } from "../src/images/decode";
import { fillRequired } from "../src/images/image";
import { IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC, KINDS, entrySchemaAt, kindByMagic } from "../src/images/magic";
import { fill } from "./images-fill";
import { REPO_ROOT, cleanup, criuBun, killWorkload, startWorkload, waitGone } from "./harness";

// the reference CRIU 4.2 beside the repository (a worktree under ../wt/NAME: two levels up), as scripts/bench.ts finds it
const PEER =
  process.env.CRIU_PEER ??
  ["..", "../.."].map((up) => resolve(REPO_ROOT, up, "shared", "tools", "criu-4.2")).find(existsSync) ??
  resolve(REPO_ROOT, "..", "shared", "tools", "criu-4.2");
const dirs: string[] = [];
afterAll(() => {
  cleanup();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Strict sameness: own keys in order, prototype defaults, value types (bigint vs number), bytes. */
function same(a: unknown, b: unknown, path = "msg"): string | undefined {
  if (typeof a !== typeof b) return `${path}: ${typeof a} vs ${typeof b}`;
  if (a === null || typeof a !== "object") return Object.is(a, b) ? undefined : `${path}: ${String(a)} vs ${String(b)}`;
  if (b === null) return `${path}: null`;
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    if (!(a instanceof Uint8Array && b instanceof Uint8Array)) return `${path}: bytes vs not`;
    return a.length === b.length && a.every((x, i) => x === b[i]) ? undefined : `${path}: bytes differ`;
  }
  if (Array.isArray(a) !== Array.isArray(b)) return `${path}: array vs not`;
  const ka = Object.keys(a as object),
    kb = Object.keys(b as object);
  if (ka.join() !== kb.join()) return `${path}: keys [${ka}] vs [${kb}]`;
  for (const k of ka) {
    const d = same((a as any)[k], (b as any)[k], `${path}.${k}`);
    if (d) return d;
  }
  const pa = Object.getPrototypeOf(a),
    pb = Object.getPrototypeOf(b);
  if (Array.isArray(a) || (pa === Object.prototype && pb === Object.prototype)) return undefined;
  if (Object.getPrototypeOf(pa) !== Object.getPrototypeOf(pb)) return `${path}: prototype chains differ`;
  return same({ ...pa }, { ...pb }, `${path}.<prototype>`);
}

let compared = 0;
/** Both decoders on the same bytes: the same message, or errors with the same message. */
function check(schema: DescMessage, bytes: Uint8Array, what: string) {
  let ref: unknown, refErr: string | undefined, ours: unknown, oursErr: string | undefined;
  try {
    ref = fromBinary(schema, bytes);
  } catch (e) {
    refErr = `${(e as Error).name}: ${(e as Error).message}`;
  }
  try {
    ours = decodeMessage(schema, bytes);
  } catch (e) {
    oursErr = `${(e as Error).name}: ${(e as Error).message}`;
  }
  compared++;
  if (refErr !== undefined || oursErr !== undefined) {
    if (refErr !== oursErr)
      throw new Error(`${what}: protobuf-es ${refErr ?? "decodes"}, ours ${oursErr ?? "decodes"}`);
    return;
  }
  const d = same(ref, ours);
  if (d) throw new Error(`${what}: ${d}`);
}

/** Every message type the images use, and every message type inside them. */
function allTypes(): DescMessage[] {
  const seen = new Set<DescMessage>();
  const add = (m: DescMessage) => {
    if (seen.has(m)) return;
    seen.add(m);
    for (const f of m.fields)
      if (f.fieldKind === "message" || (f.fieldKind === "list" && f.listKind === "message")) add(f.message);
    for (const n of m.nestedMessages) add(n);
  };
  for (const k of KINDS) if (k.schema) add(k.schema);
  for (const k of KINDS)
    if (k.name === "PAGEMAP" || k.name === "GHOST_FILE") add(entrySchemaAt(k, 1)), add(entrySchemaAt(k, 0));
  return [...seen];
}

let seed = 777;
const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;

/** Truncations at every length, and each byte set to a few values at every offset. */
function damaged(schema: DescMessage, bytes: Uint8Array, what: string, everyOffset = true) {
  for (let n = 0; n < bytes.length; n++) check(schema, bytes.subarray(0, n), `${what} cut to ${n}`);
  const step = everyOffset ? 1 : Math.max(1, Math.floor(bytes.length / 64));
  for (let i = 0; i < bytes.length; i += step)
    for (const v of [0x00, 0xff, 0x80, 0x7f, bytes[i] ^ 0x01, bytes[i] ^ 0x07, Math.floor(rnd() * 256)]) {
      const b = bytes.slice();
      b[i] = v;
      check(schema, b, `${what} byte ${i} = 0x${v.toString(16)}`);
    }
}

describe("decodeMessage = fromBinary", () => {
  const types = allTypes();

  test("every message type, every field set, and damaged", () => {
    for (const t of types) {
      for (const s of [1, 2, 5]) {
        const m = fill(t, s);
        fillRequired(t, m);
        const b = toBinary(t, m);
        check(t, b, `${t.typeName} (fill ${s})`);
        if (s === 1) damaged(t, b, t.typeName, b.length < 400);
      }
      check(t, new Uint8Array(0), `${t.typeName} empty`);
    }
    expect(compared).toBeGreaterThan(types.length * 10);
  });

  test("lenient wire data: unknown fields, closed enums' unknown values, packing, merging, wrong wire types", () => {
    const w = (...a: number[]) => new Uint8Array(a);
    for (const t of types) {
      const unknownNo = Math.max(0, ...t.fields.map((f) => f.number)) + 1;
      const tag = (no: number, wt: number) => {
        const out: number[] = [];
        let v = (no << 3) | wt;
        while (v > 0x7f) {
          out.push((v & 0x7f) | 0x80);
          v >>>= 7;
        }
        out.push(v);
        return out;
      };
      // unknown fields of each wire type, twice
      const unk = [
        ...tag(unknownNo, 0),
        0x96,
        0x01,
        ...tag(unknownNo + 1, 1),
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        8,
        ...tag(unknownNo + 2, 2),
        3,
        9,
        9,
        9,
        ...tag(unknownNo + 3, 5),
        1,
        2,
        3,
        4,
        ...tag(unknownNo + 4, 3),
        ...tag(1, 0),
        5,
        ...tag(unknownNo + 4, 4),
        ...tag(unknownNo, 0),
        0x01,
      ];
      check(t, w(...unk), `${t.typeName} unknown fields`);
      // tags: field 0, wire types 6 and 7, overlong and overflowing varints, a tag cut short
      for (const bad of [
        [0x00],
        [0x06],
        [0x0f],
        [0x88, 0x00, 0x01],
        [0x88, 0x80, 0x80, 0x80, 0x00, 0x01],
        [0x88, 0x80, 0x80, 0x80, 0x10, 0x01],
        [0xff, 0xff, 0xff, 0xff, 0x0f, 0x01],
        [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        [0x88],
        [0x88, 0x80],
      ])
        check(t, w(...bad), `${t.typeName} tag [${bad}]`);
      for (const f of t.fields) {
        const base = `${t.typeName}.${f.name}`;
        // every wire type for this field, value shapes the readers may meet
        for (const wt of [0, 1, 2, 5])
          for (const body of [
            [0x05],
            [0x96, 0x01],
            [0xff, 0xff, 0xff, 0xff, 0x0f],
            [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
            [3, 1, 2, 3],
            [0x7f],
          ]) {
            const b = w(...tag(f.number, wt), ...body, 0, 0, 0, 0, 0, 0, 0, 0);
            check(t, b, `${base} wire type ${wt} [${body}]`);
            check(
              t,
              w(...tag(f.number, wt), ...body, ...tag(f.number, wt), ...body, 0, 0, 0, 0, 0, 0, 0, 0),
              `${base} twice, wire type ${wt} [${body}]`
            );
          }
        // closed enums: values outside the enum, negative ones (10-byte varints)
        if (f.fieldKind === "enum" || (f.fieldKind === "list" && f.listKind === "enum")) {
          check(t, w(...tag(f.number, 0), 0xe7, 0x07), `${base} enum 999`);
          check(t, w(...unk, ...tag(f.number, 0), 0xe7, 0x07), `${base} enum 999 after unknown fields`);
          check(t, w(...tag(f.number, 0), 0xe7, 0x07, ...unk), `${base} enum 999 before unknown fields`);
          check(
            t,
            w(...tag(f.number, 0), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
            `${base} enum -1`
          );
        }
        // a message given twice: merged into one
        if (f.fieldKind === "message") {
          const a = fill(f.message, 3),
            c = fill(f.message, 4);
          fillRequired(f.message, a);
          fillRequired(f.message, c);
          const ba = toBinary(f.message, a),
            bc = toBinary(f.message, c);
          const len = (n: number) => (n < 128 ? [n] : [(n & 0x7f) | 0x80, n >> 7]);
          check(
            t,
            w(...tag(f.number, 2), ...len(ba.length), ...ba, ...tag(f.number, 2), ...len(bc.length), ...bc),
            `${base} twice`
          );
        }
      }
    }
  });

  test("images of real processes, from criu-bun and CRIU 4.2, and damaged", async () => {
    const sets: [string, string][] = [];
    for (const [tool, cmd] of [
      ["criu-bun", null],
      ["CRIU 4.2", existsSync(PEER) ? PEER : undefined],
    ] as const) {
      if (cmd === undefined) {
        console.warn(`decode.test: ${PEER} missing, CRIU 4.2's images not compared`);
        continue;
      }
      for (const wl of ["files", "signals", "pipes"]) {
        const w = await startWorkload(wl);
        const dir = mkdtempSync(join(tmpdir(), "criu-bun-decode-"));
        dirs.push(dir);
        const r = cmd
          ? Bun.spawnSync([cmd, "dump", "-t", String(w.pid), "-D", dir, "-o", "dump.log", "--shell-job"], {
              stdout: "pipe",
              stderr: "pipe",
            })
          : null;
        const res = r
          ? { code: r.exitCode, stderr: r.stderr.toString() }
          : criuBun(["dump", "-t", String(w.pid), "-D", dir, "--shell-job"]);
        killWorkload(w);
        await waitGone(w.pid);
        if (res.code !== 0) throw new Error(`${tool} dump of ${wl}: ${res.stderr}`);
        sets.push([`${tool} ${wl}`, dir]);
      }
    }
    let entries = 0;
    for (const [what, dir] of sets) {
      for (const f of readdirSync(dir).filter((f) => f.endsWith(".img"))) {
        const buf = new Uint8Array(readFileSync(join(dir, f)));
        if (buf.length < 8) continue;
        const dv = new DataView(buf.buffer);
        let m = dv.getUint32(0, true),
          off = 4;
        if (m === IMG_COMMON_MAGIC || m === IMG_SERVICE_MAGIC) {
          m = dv.getUint32(4, true);
          off = 8;
        }
        const k = kindByMagic.get(m);
        if (!k || k.header === "raw" || k.payload !== "none") continue; // payload kinds: by the message types above
        for (let i = 0; off + 4 <= buf.length; i++) {
          const n = dv.getUint32(off, true);
          const body = buf.subarray(off + 4, off + 4 + n);
          const schema = entrySchemaAt(k, i);
          check(schema, body, `${what} ${f} entry ${i}`);
          // the restore's own images, damaged (long ones at 64 offsets)
          if (i < 3) damaged(schema, body, `${what} ${f} entry ${i}`, body.length < 600);
          entries++;
          off += 4 + n;
        }
      }
    }
    expect(entries).toBeGreaterThan(50);
  }, 120_000);
});
