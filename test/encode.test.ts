// The compiled encoder (src/images/encode.ts) against protobuf-es's own: for every message type of
// the images, random messages (fields set or not, lists of 0..3, values at their range's edges,
// non-ASCII strings, nested messages) must give the same bytes as create + fillRequired +
// toBinary, whether given as plain objects or as messages; and both decode back the same.
import { expect, test } from "bun:test";
import { create, toBinary, fromBinary, ScalarType, type DescMessage } from "@bufbuild/protobuf";
import { encodeMessage } from "../src/images/encode";
import { fillRequired, encodeImage, decodeImage } from "../src/images/image";
import * as gens from "./encode-schemas";

let seed = 12345;
const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
const pick = <T>(a: T[]): T => a[Math.floor(rnd() * a.length)];

function scalar(t: ScalarType, f: any): unknown {
  switch (t) {
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return pick([0, 1, 127, 128, 16383, 16384, 0x7fffffff, 0xffffffff, Math.floor(rnd() * 2 ** 32)]);
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return pick([0, 1, -1, 300, -300, 0x7fffffff, -0x80000000]);
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return pick([
        0n,
        1n,
        127n,
        128n,
        0x7fffffffn,
        0x80000000n,
        0xffffffffn,
        0x100000000n,
        0xffffffffffffffffn,
        0x7fff12345678n,
      ]);
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return pick([0n, 1n, -1n, -0x8000000000000000n, 0x7fffffffffffffffn, 12345678901n, -5n]);
    case ScalarType.BOOL:
      return rnd() < 0.5;
    case ScalarType.STRING:
      return pick(["", "a", "/tmp/x y", "é∂ü/路径", "x".repeat(200)]);
    case ScalarType.BYTES:
      return pick([new Uint8Array(0), new Uint8Array([0, 1, 255]), new Uint8Array(300).fill(7)]);
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return pick([0, 1.5, -2.25]);
  }
  throw new Error(`scalar ${t} of ${f.name}`);
}

function value(f: any, depth: number): unknown {
  const kind = f.fieldKind === "list" ? f.listKind : f.fieldKind;
  if (kind === "message") return randomMsg(f.message, depth + 1);
  if (kind === "enum") return (pick(f.enum.values) as { number: number }).number;
  return scalar(f.scalar, f);
}

function randomMsg(schema: DescMessage, depth = 0): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  for (const f of schema.fields as any[]) {
    if (depth > 3 && f.presence !== 3) continue;
    if (rnd() < 0.35) continue; // unset (required ones then take their defaults)
    if (f.fieldKind === "list") o[f.localName] = Array.from({ length: Math.floor(rnd() * 4) }, () => value(f, depth));
    else if (f.fieldKind === "message" && depth > 3) continue;
    else o[f.localName] = value(f, depth);
  }
  return o;
}

const schemas: DescMessage[] = Object.entries(gens)
  .filter(([k, v]) => k.endsWith("Schema") && (v as any)?.kind === "message")
  .map(([, v]) => v as DescMessage);

test("every message type: the same bytes as create + fillRequired + toBinary", () => {
  expect(schemas.length).toBeGreaterThan(100);
  let cases = 0;
  for (const schema of schemas) {
    for (let i = 0; i < 40; i++) {
      const plain = randomMsg(schema);
      const m = create(schema, structuredClone(plain) as any);
      fillRequired(schema, m);
      const want = toBinary(schema, m);
      const got = encodeMessage(schema, plain);
      if (Buffer.compare(Buffer.from(got), Buffer.from(want)) !== 0) {
        throw new Error(
          `${schema.typeName} case ${i}: ${Buffer.from(got).toString("hex")} != ${Buffer.from(want).toString("hex")}`
        );
      }
      // a message made by create() (fields on its prototype unset) encodes the same
      expect(encodeMessage(schema, create(schema, structuredClone(plain) as any))).toEqual(want);
      cases++;
    }
  }
  console.log(`${cases} messages of ${schemas.length} types compared`);
});

test("a value out of its field's range is refused, not wrapped", () => {
  const s = schemas.find((x) => x.typeName === "fdinfo_entry")!;
  expect(() => encodeMessage(s, { id: -1, flags: 0, type: 1, fd: 3 })).toThrow(/out of range/);
  expect(() => encodeMessage(s, { id: 1.5, flags: 0, type: 1, fd: 3 })).toThrow(/out of range/);
});

test("an image encoded by the fast path decodes back to the same entries", () => {
  const s = schemas.find((x) => x.typeName === "fdinfo_entry")!;
  const entries = Array.from({ length: 1000 }, (_, i) =>
    create(s, { id: i + 1, flags: i & 1, type: 1 + (i % 5), fd: i + 3 })
  );
  const bytes = encodeImage("FDINFO", entries);
  const back = decodeImage(bytes, "fdinfo-1.img").entries;
  expect(back.length).toBe(1000);
  back.forEach((e: any, i) => {
    expect(e.fd).toBe(i + 3);
    expect(e.type).toBe(1 + (i % 5));
  });
  expect((fromBinary(s, toBinary(s, entries[7])) as any).fd).toBe(10);
});
