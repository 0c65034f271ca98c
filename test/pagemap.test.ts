// The pagemap fast path (src/images/pagemap.ts) against the generic protobuf path and crit.
import { expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import {
  encodePagemap,
  decodePagemap,
  decodePagemapTable,
  presentRuns,
  PagemapWriter,
  RunList,
} from "../src/images/pagemap";
import { markLazy, markLazyList } from "../src/resources/lazymem";
import { VMA, MAP, PE } from "../src/resources/vma";
import { readImage, writeImage, pagemapNrPages } from "../src/images/image";
import * as S from "../src/images/schemas";

const runs = [
  { vaddr: 0x1000n, nrPages: 1, flags: 4 },
  { vaddr: 0x7ffff7dd0000n, nrPages: 300, flags: 4 },
  { vaddr: 0x7fffffffe000n, nrPages: 2 ** 33, flags: 1 }, // over 32 bits: compat field is 0
  { vaddr: 0x555555554000n, nrPages: 127, flags: 2 | 4 },
];

// pagemap images byte by byte: a u32, a varint, an entry (its length, then its fields), a field (tag, value)
const u32 = (v: number) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24];
const varint = (v: bigint) => {
  const o: number[] = [];
  while (v > 0x7fn) {
    o.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  o.push(Number(v));
  return o;
};
const entry = (...fields: number[][]) => {
  const body = fields.flat();
  return [...u32(body.length), ...body];
};
const f = (n: number, v: bigint) => [...varint(BigInt(n << 3)), ...varint(v)];

test("our encoding decodes with the generic reader and with crit, both page-count fields right", () => {
  const d = mkdtempSync(join(tmpdir(), "criu-bun-pm-"));
  try {
    writeFileSync(join(d, "pagemap-1.img"), encodePagemap(7, runs));
    const msgs = readImage(d, "pagemap-1.img", "PAGEMAP");
    expect((msgs[0] as S.pagemap_head).pagesId).toBe(7);
    expect(
      (msgs.slice(1) as S.pagemap_entry[]).map((e) => ({ vaddr: e.vaddr, nrPages: pagemapNrPages(e), flags: e.flags }))
    ).toEqual(runs);
    expect((msgs[3] as S.pagemap_entry).compatNrPages).toBe(0);
    expect((msgs[2] as S.pagemap_entry).compatNrPages).toBe(300);
    if (existsSync("/usr/bin/crit")) {
      const r = Bun.spawnSync(["crit", "decode", "-i", join(d, "pagemap-1.img")]);
      expect(r.exitCode).toBe(0);
      const j = JSON.parse(r.stdout.toString());
      expect(j.magic).toBe("PAGEMAP");
      expect(j.entries[0]).toEqual({ pages_id: 7 });
      expect(j.entries[1].vaddr).toBe(4096);
      expect(j.entries[3].nr_pages).toBe(0); // crit 3.17 names field 2 nr_pages: the 32-bit count, 0 when it overflows
    }
  } finally {
    rmSync(d, { recursive: true });
  }
});

test("the fast decoder reads what the generic writer (and CRIU 4.2's nr_pages-only entries) produce", () => {
  const d = mkdtempSync(join(tmpdir(), "criu-bun-pm-"));
  try {
    writeImage(d, "pagemap-2.img", "PAGEMAP", [
      create(S.pagemap_headSchema, { pagesId: 3 }),
      create(S.pagemap_entrySchema, { vaddr: 0x2000n, compatNrPages: 5, flags: 4 }),
      create(S.pagemap_entrySchema, { vaddr: 0x9000n, compatNrPages: 0, nrPages: 9n, flags: 4 }),
      create(S.pagemap_entrySchema, { vaddr: 0x20000n, compatNrPages: 1 }),
    ]);
    expect(decodePagemap(d, "pagemap-2.img")).toEqual({
      pagesId: 3,
      // each with the offset of its pages in the page stream
      runs: [
        { vaddr: 0x2000n, nrPages: 5, flags: 4, offset: 0 },
        { vaddr: 0x9000n, nrPages: 9, flags: 4, offset: 5 * 4096 },
        { vaddr: 0x20000n, nrPages: 1, flags: 4, offset: 14 * 4096 },
      ],
    });
  } finally {
    rmSync(d, { recursive: true });
  }
});

test("decoded runs carry their page-stream offsets (PE_PARENT and PE_LAZY runs hold none), presentRuns views the PE_PRESENT ones", () => {
  const d = mkdtempSync(join(tmpdir(), "criu-bun-pm-"));
  try {
    writeFileSync(
      join(d, "pagemap-6.img"),
      encodePagemap(2, [
        { vaddr: 0x2000n, nrPages: 5, flags: 4 },
        { vaddr: 0x9000n, nrPages: 3, flags: 1 }, // PE_PARENT
        { vaddr: 0x10000n, nrPages: 2, flags: 4 },
        { vaddr: 0x20000n, nrPages: 1, flags: 2 }, // PE_LAZY
        { vaddr: 0x7ffffffff000n, nrPages: 1, flags: 4 },
      ])
    );
    const { runs } = decodePagemap(d, "pagemap-6.img");
    expect(runs.map((r) => r.offset)).toEqual([0, 5 * 4096, 5 * 4096, 7 * 4096, 7 * 4096]);
    const p = presentRuns(runs);
    expect([...p.va]).toEqual([0x2000, 0x10000, 0x7ffffffff000]);
    expect([...p.nr]).toEqual([5, 2, 1]);
    expect(p.bytes).toBe(8 * 4096);
    expect(presentRuns(runs)).toBe(p); // built once per pagemap
    expect(presentRuns([]).bytes).toBe(0);
    // the same from the typed table a restore reads, and its objects made on request
    const t = decodePagemapTable(d, "pagemap-6.img");
    expect(t.pagesId).toBe(2);
    expect([...t.va]).toEqual([0x2000, 0x9000, 0x10000, 0x20000, 0x7ffffffff000]);
    expect([...t.nr]).toEqual([5, 3, 2, 1, 1]);
    expect([...t.flags]).toEqual([4, 1, 4, 2, 4]);
    expect([...t.offset]).toEqual(runs.map((r) => r.offset));
    expect(t.runs()).toEqual(runs);
    expect(t.runs()).toBe(t.runs());
    const q = presentRuns(t);
    expect([...q.va]).toEqual([...p.va]);
    expect([...q.nr]).toEqual([...p.nr]);
    expect(q.bytes).toBe(p.bytes);
    expect(t.some(2, 5)).toBe(true); // PE_LAZY alone
    expect(t.some(1, 4)).toBe(true); // PE_PARENT without PE_PRESENT
    expect(t.some(8)).toBe(false);
  } finally {
    rmSync(d, { recursive: true });
  }
});

test("truncated and garbage pagemaps give one error naming the file and offset", () => {
  const d = mkdtempSync(join(tmpdir(), "criu-bun-pm-"));
  try {
    const good = encodePagemap(1, runs);
    writeFileSync(join(d, "pagemap-3.img"), good.subarray(0, good.length - 3));
    expect(() => decodePagemap(d, "pagemap-3.img")).toThrow(
      /pagemap-3\.img: truncated entry \(needs \d+ bytes, has \d+\) at offset \d+/
    );
    writeFileSync(join(d, "pagemap-4.img"), Buffer.from("garbage garbage"));
    expect(() => decodePagemap(d, "pagemap-4.img")).toThrow(
      /pagemap-4\.img: not a PAGEMAP image \(bad magic\) at offset 0/
    );
  } finally {
    rmSync(d, { recursive: true });
  }
});

test("an address a double cannot hold exactly is refused, one it can is read", () => {
  const d = mkdtempSync(join(tmpdir(), "criu-bun-pm-"));
  try {
    // 2^54 + 0x1000: page-aligned above 2^53 (exact in a double); 2^54 + 1 would round to 2^54
    const exact = (1n << 54n) + 0x1000n;
    writeFileSync(join(d, "pagemap-7.img"), encodePagemap(1, [{ vaddr: exact, nrPages: 1, flags: 4 }]));
    expect(decodePagemap(d, "pagemap-7.img").runs[0].vaddr).toBe(exact);
    // (the generic writer: encodePagemap itself goes through a double)
    writeImage(d, "pagemap-8.img", "PAGEMAP", [
      create(S.pagemap_headSchema, { pagesId: 1 }),
      create(S.pagemap_entrySchema, { vaddr: (1n << 54n) + 1n, compatNrPages: 1, flags: 4 }),
    ]);
    expect(() => decodePagemapTable(d, "pagemap-8.img")).toThrow(
      /pagemap-8\.img: value 0x40000000000001 has more bits than a run's address can hold at offset \d+/
    );
  } finally {
    rmSync(d, { recursive: true });
  }
});

test("a million runs round-trip (the time is printed, not asserted)", () => {
  const many = Array.from({ length: 1_000_000 }, (_, i) => ({
    vaddr: 0x7f0000000000n + BigInt(i) * 0x2000n,
    nrPages: 1,
    flags: 4,
  }));
  const t0 = performance.now();
  const bytes = encodePagemap(1, many);
  const d = mkdtempSync(join(tmpdir(), "criu-bun-pm-"));
  try {
    writeFileSync(join(d, "pagemap-5.img"), bytes);
    const back = decodePagemap(d, "pagemap-5.img");
    expect(back.runs.length).toBe(1_000_000);
    expect(back.runs[999_999]).toEqual({ ...many[999_999], offset: 999_999 * 4096 });
    console.error(`1e6 pagemap runs: encode+decode ${(performance.now() - t0).toFixed(0)} ms, ${bytes.length} bytes`);
  } finally {
    rmSync(d, { recursive: true });
  }
});

test("markLazyList (numbers, a RunList) marks and splits exactly as markLazy (objects)", () => {
  let seed = 7;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  for (let round = 0; round < 50; round++) {
    // sorted VMAs with gaps, some lazy-able (private anonymous), some not (file, locked, vDSO)
    const vmas: { start: bigint; end: bigint; status: number; flags: number }[] = [];
    let at = 0x10000 + rnd(16) * 4096;
    for (let i = 0; i < 1 + rnd(8); i++) {
      const len = (1 + rnd(64)) * 4096;
      const kind = rnd(4);
      vmas.push({
        start: BigInt(at),
        end: BigInt(at + len),
        status: kind === 3 ? VMA.FILE_PRIVATE : VMA.ANON_PRIVATE | (kind === 2 ? VMA.VDSO : 0),
        flags: MAP.PRIVATE | (kind === 1 ? MAP.LOCKED : 0),
      });
      at += len + rnd(3) * 4096;
    }
    // runs over them (merged where they touch, as a dump's RunList), some spanning VMAs and gaps
    const list = new RunList();
    for (let a = 0x10000; a < at; ) {
      const n = 1 + rnd(40);
      if (rnd(3)) list.add(a, n, rnd(5) ? PE.PRESENT : rnd(2) ? PE.PARENT : PE.PRESENT | PE.LAZY);
      a += (n + rnd(4)) * 4096;
    }
    const want = markLazy(list, vmas);
    const got = [...markLazyList(list, vmas)];
    expect(got).toEqual(want);
    expect(encodePagemap(1, markLazyList(list, vmas))).toEqual(encodePagemap(1, want));
    // straight into the image (the dump's path), its buffer grown from a small start
    expect(markLazyList(list, vmas, new PagemapWriter(1, 1)).bytes()).toEqual(encodePagemap(1, want));
  }
});

test("a RunList keeps every run across its growths (the outgrown arrays given back), release() empties it", () => {
  const list = new RunList();
  const n = 300_000; // grows 256 -> 524,288: the last outgrown arrays are 2 and 1 MiB, whole pages given back
  for (let i = 0; i < n; i++) list.push(0x10000 + i * 3 * 4096, 1 + (i % 7), i % 5 ? PE.PRESENT : PE.PARENT);
  expect(list.length).toBe(n);
  for (let i = 0; i < n; i++)
    if (
      list.vaddrAt(i) !== 0x10000 + i * 3 * 4096 ||
      list.pagesAt(i) !== 1 + (i % 7) ||
      list.flagsAt(i) !== (i % 5 ? PE.PRESENT : PE.PARENT)
    )
      throw new Error(`run ${i} changed: ${list.vaddrAt(i)} ${list.pagesAt(i)} ${list.flagsAt(i)}`);
  list.release();
  expect(list.length).toBe(0);
  expect([...list]).toEqual([]);
  list.add(0x20000, 2, PE.PRESENT);
  list.add(0x22000, 1, PE.PRESENT); // merged with the one before
  expect([...list]).toEqual([{ vaddr: 0x20000n, nrPages: 3, flags: PE.PRESENT }]);
});

test("entries the usual-entry loop does not take (long tags and values, other fields, errors) read as the generic reader reads them", () => {
  const d = mkdtempSync(join(tmpdir(), "criu-bun-pm-"));
  const file = (...entries: number[][]) =>
    new Uint8Array([...u32(0x54564319), ...u32(0x56084025), ...entry(f(1, 9n)), ...entries.flat()]);
  try {
    const usual = entry(f(1, 0x1000n), f(2, 2n), f(4, 4n), f(5, 2n));
    writeFileSync(
      join(d, "pagemap-9.img"),
      file(
        usual,
        entry(f(1, 1n << 50n), f(5, 1n), f(4, 4n)), // vaddr in 8 bytes: the general loop
        entry(f(1, 0x9000n), f(3, 1n), f(2, 3n), f(4, 4n)), // in_parent (ignored beside flags)
        entry(f(1, 0xa000n), f(5, 1n), f(4, 1n), f(21, 7n)), // a two-byte tag (field 21, ignored)
        entry(f(1, 0xb000n), f(5, 1n), f(4, 4n), f(5, 2n), f(1, 0xc000n)), // repeated: the last wins
        entry(f(1, 0xd000n), [0x28, 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00], f(4, 4n)), // 1 in 9 bytes
        usual
      )
    );
    const gen = (readImage(d, "pagemap-9.img", "PAGEMAP").slice(1) as S.pagemap_entry[]).map((e) => ({
      vaddr: e.vaddr,
      nrPages: pagemapNrPages(e),
      flags: e.flags ?? 4,
    }));
    const t = decodePagemapTable(d, "pagemap-9.img");
    expect(t.pagesId).toBe(9);
    expect(t.runs().map(({ vaddr, nrPages, flags }) => ({ vaddr, nrPages, flags }))).toEqual(gen);
    expect([...t.va]).toEqual([0x1000, 2 ** 50, 0x9000, 0xa000, 0xc000, 0xd000, 0x1000]);
    expect([...t.nr]).toEqual([2, 1, 3, 1, 2, 1, 2]);
    expect([...t.flags]).toEqual([4, 4, 4, 1, 4, 4, 4]);
    expect([...t.offset]).toEqual([0, 2, 3, 6, 6, 8, 9].map((p) => p * 4096));
    // refusals after usual entries: the same lines, at the offending entry
    const bad = (name: string, e: number[], re: RegExp) => {
      writeFileSync(join(d, name), file(usual, usual, e, usual));
      expect(() => decodePagemapTable(d, name)).toThrow(re);
    };
    const third = 8 + 4 + 2 + 2 * usual.length;
    bad(
      "pagemap-10.img",
      entry(f(1, 0x1000n), [0x2a, 1, 0]),
      /pagemap-10\.img: unexpected wire type 2 in field 5 at offset \d+/
    );
    bad(
      "pagemap-11.img",
      entry(f(4, 4n), f(5, 1n)),
      new RegExp(`pagemap_entry without vaddr or page count at offset ${third}$`)
    );
    bad(
      "pagemap-12.img",
      entry(f(1, 0x1000n), f(5, 1n), f(4, 1n << 32n)),
      /pagemap_entry flags 4294967296 out of range/
    );
    bad("pagemap-13.img", entry(f(1, 0x1000n), [0x28, 0x81]), /pagemap-13\.img: truncated varint at offset \d+/);
    // the last entry cut short
    writeFileSync(join(d, "pagemap-14.img"), file(usual, usual, [...u32(9), ...f(1, 0x1000n)]));
    expect(() => decodePagemapTable(d, "pagemap-14.img")).toThrow(
      new RegExp(`pagemap-14\\.img: truncated entry \\(needs 9 bytes, has 3\\) at offset ${third}$`)
    );
  } finally {
    rmSync(d, { recursive: true });
  }
});

test("entries as both tools write them (14 bytes, vaddr in 7), near misses among them, and thousands in a row read as the generic reader reads them", () => {
  const d = mkdtempSync(join(tmpdir(), "criu-bun-pm-"));
  const common = (va: bigint, nr: bigint, flags = 4n, compat = nr) =>
    entry(f(1, va), f(2, compat), f(4, flags), f(5, nr));
  try {
    const entries = [
      common(0x7f0000001000n, 1n),
      common(1n << 42n, 3n), // the lowest address in 7 bytes
      common(0x7ffffffff000n, 127n, 2n), // PE_PARENT: no page-stream offset taken
      common(0x555555554000n, 2n, 4n, 9n), // compat_nr_pages other than nr_pages: nr_pages wins
      common(0x7f0000100000n, 200n), // a count of two bytes: 15 bytes, the usual loop
      common(0x100000000n, 1n), // vaddr in 5 bytes: the usual loop
      entry(f(1, 0x7f0000200000n), f(4, 4n), f(2, 1n), f(5, 1n)), // 14 bytes, another order
      entry([0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00], f(2, 1n), f(4, 4n), f(5, 1n)), // 0 in 7 bytes
      common(0x7f0000300000n, 5n),
      common(0x7f0000400000n, 0x7fn, 4n, 0x7fn),
    ];
    // enough of them in a row for each loop to reach its optimizing tier
    const many: number[][] = [];
    for (let i = 0; i < 3000; i++) many.push(common(0x7f1000000000n + BigInt(i) * 0x10000n, BigInt((i % 127) + 1)));
    const all = [...entries, ...many, ...entries];
    writeFileSync(
      join(d, "pagemap-9.img"),
      new Uint8Array([...u32(0x54564319), ...u32(0x56084025), ...entry(f(1, 9n)), ...all.flat()])
    );
    const gen = (readImage(d, "pagemap-9.img", "PAGEMAP").slice(1) as S.pagemap_entry[]).map((e) => ({
      vaddr: e.vaddr,
      nrPages: pagemapNrPages(e),
      flags: e.flags ?? 4,
    }));
    const t = decodePagemapTable(d, "pagemap-9.img");
    expect(t.length).toBe(all.length);
    expect(t.runs().map(({ vaddr, nrPages, flags }) => ({ vaddr, nrPages, flags }))).toEqual(gen);
    expect([...t.va.subarray(0, entries.length)]).toEqual([
      0x7f0000001000,
      2 ** 42,
      0x7ffffffff000,
      0x555555554000,
      0x7f0000100000,
      0x100000000,
      0x7f0000200000,
      0,
      0x7f0000300000,
      0x7f0000400000,
    ]);
    expect([...t.nr.subarray(0, entries.length)]).toEqual([1, 3, 127, 2, 200, 1, 1, 1, 5, 127]);
    // each run's pages start where the PE_PRESENT runs before it end
    let off = 0;
    for (let i = 0; i < t.length; i++) {
      expect(t.offset[i]).toBe(off);
      if (t.flags[i] & 4) off += t.nr[i] * 4096;
    }
  } finally {
    rmSync(d, { recursive: true });
  }
});
