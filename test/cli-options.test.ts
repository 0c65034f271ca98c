// criu's command line: the option table (src/cli/criu-options.ts) against CRIU 4.2's.
import { describe, test, expect } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { CRIU_OPTIONS, CRIU_SHORT_OPTS } from "../src/cli/criu-options";

const CRIU_42 = "/work/shared/tools/criu-4.2";

describe("option table", () => {
  test("85 long options, unique names and letters, short string as criu's", () => {
    expect(CRIU_OPTIONS.length).toBe(85);
    expect(new Set(CRIU_OPTIONS.map((o) => o.name)).size).toBe(85);
    const shorts = CRIU_OPTIONS.filter((o) => o.short).map((o) => o.short!);
    expect(new Set(shorts).size).toBe(shorts.length);
    // every letter of "dSsRt:hD:o:v::x::Vr:jJ:lW:L:M:" with its argument kind
    const kinds = new Map<string, string>();
    for (const m of CRIU_SHORT_OPTS.matchAll(/([A-Za-z])(:{0,2})/g)) kinds.set(m[1], ["none", "required", "optional"][m[2].length]);
    expect(new Set(shorts)).toEqual(new Set(kinds.keys()));
    for (const o of CRIU_OPTIONS) if (o.short) expect(`${o.short}:${o.arg}`).toBe(`${o.short}:${kinds.get(o.short)}`);
  });

  test.skipIf(!existsSync(CRIU_42))("every name is one CRIU 4.2's binary knows (its getopt table strings)", () => {
    const strings = readFileSync(CRIU_42).toString("latin1");
    for (const o of CRIU_OPTIONS) {
      expect(strings.includes(`${o.name}\0`)).toBe(true);
      expect(`${o.name}: ${strings.includes(`\0no-${o.name}\0`)}`).toBe(`${o.name}: ${!!o.negatable}`);
    }
    expect(strings.includes(`${CRIU_SHORT_OPTS}\0`)).toBe(true);
  });
});
