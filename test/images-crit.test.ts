// Interop with Debian's crit (CRIU's own image tool): images we write decode with `crit decode`
// to exactly the JSON we print; images `crit encode` writes from that JSON decode with our
// reader to the same messages and payloads.
import { test, expect, describe, afterAll } from "bun:test";
import { create, equals } from "@bufbuild/protobuf";
import { existsSync, mkdtempSync, writeFileSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encodeImage, decodeImage, pagemapNrPages, writeImage } from "../src/images/image";
import * as S from "../src/images/schemas";
import { entrySchemaAt, kindByName } from "../src/images/magic";
import { toCritJson, stringifyCrit, parseCritJson, fromCritJson } from "../src/images/json";
import { sampleItems, MSG_KINDS } from "./images-fill";
import { stripForCrit } from "./crit-schema";

const CRIT = "/usr/bin/crit";
const ROOT = join(import.meta.dir, "..");
const have = existsSync(CRIT);
if (!have) console.warn(`SKIP images-crit: ${CRIT} is missing (apt-get install criu provides it)`);
const dir = mkdtempSync(join(tmpdir(), "criu-bun-crit-"));
/** temporary directories of this file, removed at its end (they held two per run in /tmp before) */
const made = [dir];
afterAll(() => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

// Kinds crit 3.17 has no handler for, and fields it does not know (newer CRIU / criu-bun).
const CRIT_UNHANDLED = new Set(["SIGNAL", "BINFMT_MISC"]);
const ours = MSG_KINDS.filter((k) => !CRIT_UNHANDLED.has(k.name));
// crit 3.17's IPCNS_SHM and BPFMAP_DATA encoders pass a str to base64.decodebytes (a crit bug), so that
// direction is covered by our own round trip only.
const CRIT_ENCODE_BROKEN = new Set(["IPCNS_SHM", "BPFMAP_DATA"]);

function crit(...args: string[]): string {
  const r = Bun.spawnSync([CRIT, ...args], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0)
    throw new Error(`crit ${args.join(" ")} failed: ${r.stderr.toString().trim().split("\n").pop()}`);
  return r.stdout.toString();
}

const schemaAt = (kind: string, i: number) => entrySchemaAt(kindByName.get(kind)!, i);

/** Our items, minus the fields crit 3.17 does not know (read from crit's own descriptors): CRIU 4's
 * additions and criu-bun's extensions; both sides then describe the same thing. */
function itemsFor(kind: string) {
  const items = sampleItems(kindByName.get(kind)!);
  items.forEach((it, i) => stripForCrit(schemaAt(kind, i), it.msg));
  return items;
}

/** `criu-bun show encode` (src/cli/show.ts): crit's JSON text -> image bytes. crit 3.17's name for
 *  pagemap field 2 (nr_pages, CRIU 4.2's compat_nr_pages) is put back to CRIU 4.2's first. */
function showEncode(kind: string, text: string): Uint8Array {
  const j: any = parseCritJson(text);
  if (kind === "PAGEMAP")
    for (const e of j.entries.slice(1))
      if ("nr_pages" in e && !("compat_nr_pages" in e)) {
        e.compat_nr_pages = e.nr_pages;
        delete e.nr_pages;
      }
  const { kind: k, items } = fromCritJson(j);
  return encodeImage(k, items);
}

/** crit 3.17 calls pagemap field 2 "nr_pages" and does not know field 5. */
function asCrit317(kind: string, j: any) {
  if (kind === "PAGEMAP")
    for (const e of j.entries.slice(1)) {
      e.nr_pages = e.compat_nr_pages;
      delete e.compat_nr_pages;
    }
  return j;
}

describe.skipIf(!have)("criu-bun -> crit decode", () => {
  for (const k of ours) {
    test(k.name, () => {
      const items = itemsFor(k.name);
      const bin = encodeImage(k.name, items);
      const f = join(dir, `ours-${k.name}.img`);
      writeFileSync(f, bin);
      const theirs = crit("decode", "-i", f, "--pretty").trimEnd();
      const mine = stringifyCrit(asCrit317(k.name, toCritJson(decodeImage(bin))));
      if (k.name === "PAGEMAP") expect(parseCritJson(theirs)).toEqual(parseCritJson(mine));
      else expect(theirs).toBe(mine); // same text, byte for byte
      // crit decode -> criu-bun show encode: our bytes back
      expect(`${k.name}: ${Buffer.compare(showEncode(k.name, theirs), bin)}`).toBe(`${k.name}: 0`);
    });
  }
  test("show FILE prints what crit decode prints", () => {
    const f = join(dir, "ours-CORE.img");
    const r = Bun.spawnSync([process.execPath, join(ROOT, "src/main.ts"), "show", f], {
      stdout: "pipe",
      stderr: "pipe",
    });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.toString().trimEnd()).toBe(crit("decode", "-i", f, "--pretty").trimEnd());
  });
});

describe.skipIf(!have)("crit encode -> criu-bun", () => {
  for (const k of ours.filter((k) => !CRIT_ENCODE_BROKEN.has(k.name))) {
    test(k.name, () => {
      const items = itemsFor(k.name);
      const json = asCrit317(k.name, toCritJson(decodeImage(encodeImage(k.name, items))));
      const jf = join(dir, `crit-${k.name}.json`),
        f = join(dir, `crit-${k.name}.img`);
      writeFileSync(jf, stringifyCrit(json));
      crit("encode", "-i", jf, "-o", f);
      const critBytes = new Uint8Array(readFileSync(f));
      // crit's image: show decode -> show encode, and crit decode -> show encode, give crit's bytes back
      expect(
        `${k.name}: ${Buffer.compare(showEncode(k.name, stringifyCrit(toCritJson(decodeImage(critBytes)))), critBytes)}`
      ).toBe(`${k.name}: 0`);
      // (crit decode of bytes equal to ours was checked above, in criu-bun -> crit decode)
      if (Buffer.compare(critBytes, encodeImage(k.name, items)) !== 0)
        expect(`${k.name}: ${Buffer.compare(showEncode(k.name, crit("decode", "-i", f)), critBytes)}`).toBe(
          `${k.name}: 0`
        );
      const img = decodeImage(critBytes, f);
      expect(img.kind).toBe(k.name);
      expect(img.entries.length).toBe(items.length);
      img.entries.forEach((m: any, i) => {
        const want: any = items[i].msg;
        if (k.name === "PAGEMAP" && i > 0) {
          // crit 3.17 wrote the count in field 2 only: we read it as compat_nr_pages
          expect(pagemapNrPages(m)).toBe(want.compatNrPages);
          expect([m.vaddr, m.flags, m.inParent]).toEqual([want.vaddr, want.flags, want.inParent]);
          return;
        }
        expect(equals(schemaAt(k.name, i), m, want)).toBe(true);
        if (k.payload !== "none")
          expect(Buffer.from(img.payloads![i]).equals(Buffer.from(items[i].payload))).toBe(true);
      });
    });
  }
});

describe.skipIf(!have)("hand-written crit JSON", () => {
  test("crit encode of a CRIU-style inet socket + core decodes to the same values", () => {
    const files = {
      magic: "FILES",
      entries: [
        {
          type: "INETSK",
          id: 3,
          isk: {
            id: 3,
            ino: 81234,
            family: "INET",
            type: "STREAM",
            proto: "TCP",
            state: "ESTABLISHED",
            src_port: 40000,
            dst_port: 8080,
            flags: "0x802",
            backlog: 0,
            src_addr: ["127.0.0.1"],
            dst_addr: ["10.1.2.3"],
            fown: { uid: 0, euid: 0, signum: 0, pid_type: 0, pid: 0 },
            opts: {
              so_sndbuf: 16384,
              so_rcvbuf: 131072,
              so_snd_tmo_sec: 0,
              so_snd_tmo_usec: 0,
              so_rcv_tmo_sec: 0,
              so_rcv_tmo_usec: 0,
            },
          },
        },
      ],
    };
    const jf = join(dir, "hand-files.json"),
      f = join(dir, "hand-files.img");
    writeFileSync(jf, JSON.stringify(files));
    crit("encode", "-i", jf, "-o", f);
    const img = decodeImage(new Uint8Array(readFileSync(f)), f);
    const s: any = (img.entries[0] as any).isk;
    expect([s.family, s.type, s.proto, s.state, s.srcPort, s.dstPort, s.flags]).toEqual([
      2, 1, 6, 1, 40000, 8080, 0x802,
    ]);
    expect(s.srcAddr).toEqual([0x0100007f]); // network order word, as CRIU stores it
    expect(s.dstAddr).toEqual([0x0302010a]);
    const shown = toCritJson(img) as any;
    expect(shown.entries[0].isk.src_addr).toEqual(["127.0.0.1"]);
    expect(shown.entries[0].isk.proto).toBe("TCP");
  });
  test("crit x ps/fds/mems read a directory we wrote", () => {
    const d = mkdtempSync(join(tmpdir(), "criu-bun-critx-"));
    made.push(d);
    writeImage(d, "pstree.img", "PSTREE", [
      create(S.pstree_entrySchema, { pid: 50, pgid: 50, sid: 50, threads: [50] }),
    ]);
    writeImage(d, "core-50.img", "CORE", [
      create(S.core_entrySchema, { mtype: 1, tc: { comm: "worker", taskState: 1 } }),
    ]);
    writeImage(d, "ids-50.img", "IDS", [create(S.task_kobj_ids_entrySchema, { filesId: 9 })]);
    writeImage(d, "fdinfo-9.img", "FDINFO", [create(S.fdinfo_entrySchema, { fd: 1, id: 2, type: 1 })]);
    writeImage(d, "files.img", "FILES", [
      create(S.file_entrySchema, { type: 1, id: 2, reg: { id: 2, name: "/tmp/out.log", fown: {} } }),
    ]);
    writeImage(d, "fs-50.img", "FS", [create(S.fs_entrySchema, { cwdId: 2, rootId: 2 })]);
    writeImage(d, "mm-50.img", "MM", [
      create(S.mm_entrySchema, {
        exeFileId: 2,
        vmas: [{ start: 0x10000n, end: 0x12000n, prot: 3, status: 0x201, fd: -1n }],
      }),
    ]);
    expect(crit("x", d, "ps")).toMatch(/50\s+50\s+50\s+worker/);
    expect(crit("x", d, "fds")).toMatch(/1: \/tmp\/out\.log/);
    expect(crit("x", d, "mems")).toMatch(/00010000-00012000\s+rw-/);
  });
});
