// Image layer: framing, every kind's round trip (binary and crit JSON), errors, show CLI.
import { test, expect, describe, afterAll } from "bun:test";
import { equals, create } from "@bufbuild/protobuf";
import { mkdtempSync, writeFileSync, readFileSync, existsSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  encodeImage,
  decodeImage,
  writeImage,
  writeImageWithPayload,
  readImage,
  readImagePayloads,
  openImage,
  imageExists,
  ImageError,
  pagemapNrPages,
  pagemapCounts,
} from "../src/images/image";
import { KINDS, kindByName, IMG_COMMON_MAGIC, entrySchemaAt, imageName } from "../src/images/magic";
import {
  toCritJson,
  fromCritJson,
  stringifyCrit,
  parseCritJson,
  qpEncode,
  qpDecode,
  formatIp,
  parseIp,
} from "../src/images/json";
import { type pipe_data_entry } from "../src/images/gen/files_pb";
import { pstree_entrySchema } from "../src/images/gen/pstree_pb";
import { pagemap_entrySchema } from "../src/images/gen/mm_pb";
import { CriuError } from "../src/log";
import { sampleItems, MSG_KINDS } from "./images-fill";

const ROOT = join(import.meta.dir, "..");
const BUN = process.execPath;
const tmpDirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), "criu-bun-img-"));
  tmpDirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of tmpDirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const schemaAt = (kind: string, i: number) => entrySchemaAt(kindByName.get(kind)!, i);

describe("round trip of every image kind", () => {
  for (const k of MSG_KINDS) {
    test(k.name, () => {
      const items = sampleItems(k);
      const bin = encodeImage(k.name, items);
      const img = decodeImage(bin, `sample-${k.name}`);
      expect(img.kind).toBe(k.name);
      expect(img.entries.length).toBe(items.length);
      img.entries.forEach((m, i) => {
        expect(equals(schemaAt(k.name, i), m as any, items[i].msg as any)).toBe(true);
        if (k.payload !== "none")
          expect(Buffer.from(img.payloads![i]).equals(Buffer.from(items[i].payload))).toBe(true);
      });
      // crit JSON, through text, and back to identical bytes
      const text = stringifyCrit(toCritJson(img));
      const back = fromCritJson(parseCritJson(text));
      expect(back.kind).toBe(k.name);
      expect(Buffer.from(encodeImage(back.kind, back.items)).equals(Buffer.from(bin))).toBe(true);
    });
  }
});

test("headers: common, inventory-only and service magics, little endian", () => {
  const inv = encodeImage("INVENTORY", sampleItems(kindByName.get("INVENTORY")!));
  expect(new DataView(inv.buffer).getUint32(0, true)).toBe(0x58313116);
  const st = encodeImage("STATS", sampleItems(kindByName.get("STATS")!));
  expect([new DataView(st.buffer).getUint32(0, true), new DataView(st.buffer).getUint32(4, true)]).toEqual([
    0x55105940, 0x57093306,
  ]);
  const ps = encodeImage("PSTREE", [create(pstree_entrySchema, { pid: 1 })]);
  expect(Array.from(ps.subarray(0, 8))).toEqual([0x19, 0x43, 0x56, 0x54, 0x30, 0x30, 0x27, 0x50]);
  expect(new DataView(ps.buffer).getUint32(8, true)).toBe(ps.length - 12);
});

test("magic numbers agree with crit's table (pycriu magic.py)", () => {
  const f = "/usr/lib/python3/dist-packages/pycriu/images/magic.py";
  if (!existsSync(f)) {
    console.warn("SKIP: pycriu magic.py not installed");
    return;
  }
  const py = new Map<string, number>();
  for (const m of readFileSync(f, "utf8").matchAll(/by_name\['(\w+)'\] = (\d+)/g)) py.set(m[1], Number(m[2]));
  expect(py.get("IMG_COMMON")).toBe(IMG_COMMON_MAGIC);
  let n = 0;
  for (const k of KINDS)
    if (k.header !== "raw") {
      expect([k.name, py.get(k.name)]).toEqual([k.name, k.magic]);
      n++;
    }
  expect(n).toBeGreaterThan(50);
});

test("file names follow CRIU's patterns", () => {
  expect(imageName("CORE", 42)).toBe("core-42.img");
  expect(imageName("TCP_STREAM", 255)).toBe("tcp-stream-ff.img");
  expect(imageName("STATS", "dump")).toBe("stats-dump"); // no .img: CRIU and go-criu read stats-dump / stats-restore
  expect(imageName("PSTREE")).toBe("pstree.img");
});

test("writeImage / readImage / readImagePayloads / imageExists on disk", () => {
  const d = tmp();
  const k = kindByName.get("PIPES_DATA")!;
  const items = sampleItems(k) as { msg: pipe_data_entry; payload: Uint8Array }[];
  writeImageWithPayload(d, "pipes-data.img", "PIPES_DATA", items);
  expect(imageExists(d, "pipes-data.img")).toBe(true);
  expect(imageExists(d, "nope.img")).toBe(false);
  const got = readImagePayloads(d, "pipes-data.img", "PIPES_DATA");
  expect(got.map((g) => Array.from(g.payload))).toEqual(items.map((i) => Array.from(i.payload)));
  expect(readImage(d, "pipes-data.img", "PIPES_DATA").length).toBe(2);
  // payload kinds refuse writeImage without payloads; wrong payload size refused
  expect(() => writeImage(d, "x.img", "PIPES_DATA", [items[0].msg])).toThrow(CriuError);
  expect(() =>
    writeImageWithPayload(d, "x.img", "PIPES_DATA", [{ msg: items[0].msg, payload: new Uint8Array(1) }])
  ).toThrow(/payload/);
  // wrong kind
  writeImage(d, "pstree.img", "PSTREE", [create(pstree_entrySchema, { pid: 7 })]);
  expect(() => readImage(d, "pstree.img", "CORE")).toThrow(/wrong magic: expected CORE .*found PSTREE/);
  // required fields are filled in: ppid/pgid/sid zero
  expect(openImage(join(d, "pstree.img")).entries[0]).toMatchObject({ pid: 7, ppid: 0, pgid: 0, sid: 0 });
});

test("pagemap: write both counts, read either", () => {
  const a = create(pagemap_entrySchema, { vaddr: 0x1000n, ...pagemapCounts(5) });
  expect([a.compatNrPages, a.nrPages]).toEqual([5, 5n]);
  expect(pagemapNrPages(a)).toBe(5);
  const old = create(pagemap_entrySchema, { vaddr: 0x1000n, compatNrPages: 9 }); // CRIU < 4.2
  expect(pagemapNrPages(old)).toBe(9);
  const new42 = create(pagemap_entrySchema, { vaddr: 0x1000n, compatNrPages: 0, nrPages: 2n }); // CRIU 4.2
  expect(pagemapNrPages(new42)).toBe(2);
  expect(pagemapCounts(2n ** 33n).compatNrPages).toBe(0);
});

test("crit JSON details: quoted-printable names, IPs, u64", () => {
  const name = new Uint8Array([0, ...new TextEncoder().encode("x=y")]);
  expect(qpEncode(name)).toBe("=00x=3Dy");
  expect(Array.from(qpDecode("=00x=3Dy"))).toEqual(Array.from(name));
  expect(formatIp(parseIp("127.0.0.1"))).toBe("127.0.0.1");
  expect(formatIp(parseIp("2001:db8::1"))).toBe("2001:db8::1");
  expect(formatIp(parseIp("::"))).toBe("::");
  expect(formatIp(parseIp("1:0:2:0:3:0:4:5"))).toBe("1:0:2:0:3:0:4:5");
  expect(parseCritJson('{"a": 18446744073709551615, "b": [1, -2]}')).toEqual({ a: 18446744073709551615n, b: [1, -2] });
  expect(stringifyCrit({ a: 18446744073709551615n, s: "é\u007f" })).toBe(
    '{\n    "a": 18446744073709551615,\n    "s": "\\u00e9\\u007f"\n}'
  );
});

describe("broken images: one-line errors with file and offset", () => {
  const d = tmp();
  const good = encodeImage("PSTREE", [
    create(pstree_entrySchema, { pid: 1, threads: [1, 2, 3] }),
    create(pstree_entrySchema, { pid: 2 }),
  ]);
  const trunc = join(d, "trunc.img"),
    garbage = join(d, "garbage.img"),
    badentry = join(d, "badentry.img");
  writeFileSync(trunc, good.subarray(0, good.length - 3));
  writeFileSync(garbage, new Uint8Array(Array.from({ length: 64 }, (_, i) => (i * 91 + 7) & 255)));
  const bad = new Uint8Array([...good.subarray(0, 8), 4, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
  writeFileSync(badentry, bad);

  test("truncated", () => {
    let e: any;
    try {
      openImage(trunc);
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(ImageError);
    expect(e.where).toBe("image");
    expect(e.message).toContain(trunc);
    expect(e.message).toMatch(/truncated .* at offset \d+/);
    expect(e.message).not.toContain("\n");
  });
  test("garbage", () => {
    expect(() => openImage(garbage)).toThrow(new RegExp(`${garbage}: unknown magic 0x[0-9a-f]+ .* at offset 0`));
    expect(() => openImage(badentry)).toThrow(/garbage pstree_entry entry .* at offset 8$/);
  });
  test("show exits 1 with one line for each", () => {
    for (const f of [trunc, garbage, badentry, join(d, "missing.img")]) {
      const r = Bun.spawnSync([BUN, join(ROOT, "src/main.ts"), "show", f], { stdout: "pipe", stderr: "pipe" });
      expect(r.exitCode).toBe(1);
      const err = r.stderr.toString().trim();
      expect(err.split("\n").length).toBe(1);
      expect(err).toMatch(/^Error \((image|show)\): /); // a damaged image, or one show cannot read
      expect(err).toContain(f);
      expect(r.stdout.toString()).toBe("");
    }
  });
});

test("show FILE prints crit JSON; show --dir summarizes", () => {
  const d = tmp();
  const sample = (kind: string) => sampleItems(kindByName.get(kind)!);
  const ps = create(pstree_entrySchema, { pid: 100, ppid: 0, pgid: 100, sid: 100, threads: [100] });
  const kid = create(pstree_entrySchema, { pid: 101, ppid: 100, pgid: 100, sid: 100, threads: [101, 102] });
  writeImage(d, "pstree.img", "PSTREE", [ps, kid]);
  for (const pid of [100, 101]) {
    const core: any = sample("CORE")[0].msg;
    core.tc.comm = pid === 100 ? "parent" : "child";
    writeImage(d, `core-${pid}.img`, "CORE", [core]);
    const mm: any = sample("MM")[0].msg;
    mm.exeFileId = 1;
    mm.vmas = [
      {
        ...mm.vmas[0],
        start: 0x400000n,
        end: 0x401000n,
        prot: 5,
        status: 1 | (1 << 6),
        shmid: 1n,
        pgoff: 0n,
        flags: 2,
      },
      { ...mm.vmas[1], start: 0x7ffd0000n, end: 0x7ffd2000n, prot: 3, status: 1 | (1 << 1) | (1 << 9), flags: 0x22 },
    ];
    writeImage(d, `mm-${pid}.img`, "MM", [mm]);
    writeImage(d, `ids-${pid}.img`, "IDS", [{ ...(sample("IDS")[0].msg as any), filesId: 7 }]);
    writeImage(d, `fs-${pid}.img`, "FS", [{ ...(sample("FS")[0].msg as any), cwdId: 2, rootId: 3 }]);
  }
  const files = sample("FILES").map((i) => i.msg as any);
  const reg = (id: number, name: string) => ({ ...files[0], type: 1, id, reg: { ...files[0].reg, id, name } });
  writeImage(d, "files.img", "FILES", [
    reg(1, "/usr/bin/prog"),
    reg(2, "/work"),
    reg(3, "/"),
    { ...files[1], type: 2, id: 4, pipe: { ...files[1].pipe, id: 4, pipeId: 555 } },
  ]);
  const fdi = sample("FDINFO")[0].msg as any;
  writeImage(d, "fdinfo-7.img", "FDINFO", [
    { ...fdi, fd: 0, id: 1, type: 1 },
    { ...fdi, fd: 3, id: 4, type: 2 },
  ]);

  const run = (...a: string[]) =>
    Bun.spawnSync([BUN, join(ROOT, "src/main.ts"), "show", ...a], { stdout: "pipe", stderr: "pipe" });
  const r = run("--dir", d);
  expect(r.stderr.toString()).toBe("");
  expect(r.exitCode).toBe(0);
  const out = r.stdout.toString();
  expect(out).toMatch(/PID\s+PPID\s+PGID\s+SID\s+COMM/);
  expect(out).toMatch(/\s100\s+0\s+100\s+100\s+parent\n/);
  expect(out).toMatch(/\s101\s+100\s+100\s+100\s+ {4}child \(2 threads\)\n/);
  expect(out).toMatch(/00400000-00401000\s+r-x \/usr\/bin\/prog/);
  expect(out).toMatch(/7ffd0000-7ffd2000\s+rw- \[stack\]/);
  expect(out).toMatch(/\s+0: \/usr\/bin\/prog\n\s+3: pipe\[555\]\n\s+cwd: \/work\n\s+root: \/\n/);

  const j = run(join(d, "pstree.img"));
  expect(j.exitCode).toBe(0);
  expect(JSON.parse(j.stdout.toString())).toEqual({
    magic: "PSTREE",
    entries: [
      { pid: 100, ppid: 0, pgid: 100, sid: 100, threads: [100] },
      { pid: 101, ppid: 100, pgid: 100, sid: 100, threads: [101, 102] },
    ],
  });
  expect(run("--dir", join(d, "nowhere")).exitCode).toBe(1);
});
