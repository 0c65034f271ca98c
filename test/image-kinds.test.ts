// The image registry (src/images/magic.ts) is one typed table: reading and writing name a kind
// from it, and its entries are typed by the kind's schema. The @ts-expect-error lines below make
// `tsc --noEmit` fail if a misspelled kind or a wrong message type were ever accepted again.
import { test, expect } from "bun:test";
import { create } from "@bufbuild/protobuf";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readImage, writeImage } from "../src/images/image";
import { IMAGE_KINDS, KINDS, kindByName, kindByMagic, imageName, type EntryOf } from "../src/images/magic";
import * as S from "../src/images/schemas";

test("kinds and entries are checked at compile time; a written image reads back typed", () => {
  const d = mkdtempSync(join(tmpdir(), "criu-bun-kinds-"));
  try {
    writeImage(d, "mm-1.img", "MM", [create(S.mm_entrySchema, { mmBrk: 0x1000n })]);
    const mm: S.mm_entry[] = readImage(d, "mm-1.img", "MM");
    expect(mm[0].mmBrk).toBe(0x1000n);
    const core: EntryOf<"CORE"> = create(S.core_entrySchema, { mtype: 1 });
    expect(core.mtype).toBe(1);
    // @ts-expect-error a misspelled kind does not compile
    expect(() => readImage(d, "mm-1.img", "MMM")).toThrow();
    // @ts-expect-error an entry of another message does not compile (and is refused when run)
    expect(() => writeImage(d, "mm-2.img", "MM", [create(S.core_entrySchema, {})])).toThrow();
    // @ts-expect-error what a kind reads is its own message, not another's
    const wrong: S.core_entry[] = readImage(d, "mm-1.img", "MM");
    expect(wrong.length).toBe(1);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test("the table: one entry per kind name and magic, names and files as CRIU's", () => {
  expect(KINDS.length).toBe(Object.keys(IMAGE_KINDS).length);
  for (const k of KINDS) expect(kindByName.get(k.name)).toBe(k);
  const magics = KINDS.filter((k) => k.header !== "raw").map((k) => k.magic);
  expect(new Set(magics).size).toBe(magics.length);
  expect(kindByMagic.get(0x55053847)?.name).toBe("CORE");
  expect(imageName("CORE", 42)).toBe("core-42.img");
  expect(imageName("GHOST_FILE", 255)).toBe("ghost-file-ff.img");
  expect(KINDS.filter((k) => k.header !== "raw").every((k) => k.schema)).toBe(true);
});
