// Test helper: which fields Debian's crit (3.17) knows, read from its own protobuf descriptors
// (pycriu), so comparisons with crit leave out exactly the fields it cannot print: CRIU 4.x's
// additions and criu-bun's extensions (field numbers >= 1000). Not a hand-kept list.
import { existsSync } from "node:fs";
import { clearField, type DescMessage } from "@bufbuild/protobuf";

const PY = "/usr/bin/python3";
let known: Map<string, Map<number, string>> | null | undefined;

/** crit's messages: type name -> field number -> field name (null when crit is not installed). */
export function critFields(): Map<string, Map<number, string>> | null {
  if (known !== undefined) return known;
  if (!existsSync(PY) || !existsSync("/usr/bin/crit")) return (known = null);
  const script = `
import json
from pycriu.images import pb
seen = {}
def walk(d):
    if d.full_name in seen: return
    seen[d.full_name] = {f.number: f.name for f in d.fields}
    for f in d.fields:
        if f.message_type: walk(f.message_type)
for n in dir(pb):
    o = getattr(pb, n)
    if hasattr(o, 'DESCRIPTOR') and hasattr(o.DESCRIPTOR, 'fields'): walk(o.DESCRIPTOR)
print(json.dumps(seen))`;
  const r = Bun.spawnSync([PY, "-c", script], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`reading crit's schema: ${r.stderr.toString().trim().split("\n").pop()}`);
  const j = JSON.parse(r.stdout.toString()) as Record<string, Record<string, string>>;
  known = new Map(
    Object.entries(j).map(([m, fs]) => [m, new Map(Object.entries(fs).map(([n, name]) => [Number(n), name]))])
  );
  return known;
}

/** Our fields (schema's, recursively) that crit does not know: "message.field (number)". */
export function fieldsCritLacks(schema: DescMessage, out = new Set<string>(), seen = new Set<string>()): Set<string> {
  const k = critFields();
  if (!k || seen.has(schema.typeName)) return out;
  seen.add(schema.typeName);
  const theirs = k.get(schema.typeName);
  for (const f of schema.fields as any[]) {
    if (!theirs?.has(f.number)) {
      out.add(`${schema.typeName}.${f.name} (${f.number})`);
      continue;
    }
    if (f.message) fieldsCritLacks(f.message, out, seen);
  }
  return out;
}

/** Clear, in place, every field of msg (recursively) that crit does not know, as crit drops them. */
export function stripForCrit(schema: DescMessage, msg: any): void {
  const k = critFields();
  if (!k || !msg) return;
  const theirs = k.get(schema.typeName);
  for (const f of schema.fields as any[]) {
    if (!theirs?.has(f.number)) {
      clearField(msg, f);
      continue;
    }
    if (f.fieldKind === "message") stripForCrit(f.message, msg[f.localName]);
    else if (f.fieldKind === "list" && f.listKind === "message")
      for (const m of msg[f.localName]) stripForCrit(f.message, m);
  }
}
