// Fuzzing restore with damaged images: a few workloads are dumped once, then copies of their
// images are damaged (bit flips, truncations, entries reordered or duplicated, images missing or
// duplicated, numbers set out of range) and restored. Every case must end within its deadline
// with either a healthy process (the workload's own self-check passes) or exactly one clean
// error line; never internal error text; nothing left behind (no process carrying the workload's
// directory, no file, no nftables table of criu-bun's).
//
// "crafted" cases make the same changes and then rewrite criu-bun.sum to match, as someone who
// edits images on purpose would: the field checks alone must then hold (no hang, no internal
// error, nothing left). A crafted image can still describe a valid but different process (another
// register value, another fd table): those restore, and are counted as "restored, not the dumped
// process", never failed, since no check can know the values were not the dumped ones.
//
// CRIU_BUN_FUZZ_SEED=N reproduces a run (the seed is printed; case n is the same for a seed
// whatever the budget); CRIU_BUN_FUZZ_CASES=N sets the number of cases (default 200) and
// CRIU_BUN_FUZZ_SECONDS the time budget after which no new case starts (default 100).
import { afterAll, beforeAll, expect, test } from "bun:test";
import {
  cpSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  buildWorkloads,
  cleanup,
  startWorkload,
  trigger,
  waitResult,
  criuBun,
  isAlive,
  type Workload,
} from "./harness";
import { dump, imagesDir, cleanupImages, waitReaped } from "./engine-helpers";
import { openImage, encodeImage } from "../src/images/image";
import { NetlinkSocket, NETLINK } from "../src/sys/netlink";
import { writeManifest } from "../src/images/manifest";
import { prng } from "../src/codec/sample";

const SEED = Number(process.env.CRIU_BUN_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const CASES = Number(process.env.CRIU_BUN_FUZZ_CASES ?? 200);
const BUDGET_MS = Number(process.env.CRIU_BUN_FUZZ_SECONDS ?? 100) * 1000;
const WORKLOADS = ["counter", "pipes", "tree"];
const DEADLINE_MS = 20_000;

/** uniform in [0, 1) from codec/sample.ts's seedable mulberry32 */
function rng(seed: number) {
  const next = prng(seed);
  return () => next() / 4294967296;
}
const rand = rng(SEED);
const pick = <T>(a: T[]): T => a[Math.floor(rand() * a.length)];
const int = (n: number) => Math.floor(rand() * n);

const copies: string[] = [];
const pristine = new Map<string, { w: Workload; dir: string; marker: string; files: Map<string, Buffer> }>();

beforeAll(async () => {
  console.log(`fuzz: seed ${SEED} (CRIU_BUN_FUZZ_SEED=${SEED} reproduces), ${CASES} cases`);
  await buildWorkloads();
  for (const name of WORKLOADS) {
    const w = await startWorkload(name);
    const dir = imagesDir(`fuzz-${name}`);
    dump(w.pid, dir);
    await waitReaped(w.pid);
    for (const f of readdirSync(dir)) if (f.endsWith(".log")) unlinkSync(join(dir, f));
    // the workload's directory as the dump saw it: put back before every case
    const files = new Map(readdirSync(w.dir).map((f) => [f, readFileSync(join(w.dir, f))]));
    pristine.set(name, { w, dir, marker: w.dir, files });
  }
}, 120_000);
afterAll(() => {
  cleanup();
  cleanupImages();
  for (const d of copies) rmSync(d, { recursive: true, force: true });
});

// ---------- mutations ----------

const isPages = (f: string) => /^pages-\d+\.(img|lz4)$/.test(f);
const protoImages = (dir: string) => readdirSync(dir).filter((f) => f.endsWith(".img") && !isPages(f));

interface Decoded {
  kind: string;
  entries: any[];
  payloads?: Uint8Array[];
}
function decode(dir: string, f: string): Decoded | null {
  try {
    return openImage(join(dir, f)) as Decoded;
  } catch {
    return null;
  }
}
function encode(dir: string, f: string, d: Decoded): boolean {
  try {
    const items = d.entries.map((msg, i) => ({ msg, payload: d.payloads?.[i] ?? new Uint8Array(0) }));
    writeFileSync(join(dir, f), encodeImage(d.kind, items));
    return true;
  } catch {
    return false;
  }
}

/** Every numeric leaf of a decoded message: a way to read and set it. */
function numericLeaves(msg: any, out: { get: () => any; set: (v: any) => void; name: string }[] = [], path = "") {
  for (const k of Object.keys(msg)) {
    if (k.startsWith("$")) continue;
    const v = msg[k];
    if (typeof v === "number" || typeof v === "bigint")
      out.push({ get: () => msg[k], set: (x) => (msg[k] = x), name: `${path}${k}` });
    else if (Array.isArray(v)) {
      v.forEach((x, i) => {
        if (typeof x === "number" || typeof x === "bigint")
          out.push({ get: () => v[i], set: (y) => (v[i] = y), name: `${path}${k}[${i}]` });
        else if (x && typeof x === "object" && !(x instanceof Uint8Array)) numericLeaves(x, out, `${path}${k}[${i}].`);
      });
    } else if (v && typeof v === "object" && !(v instanceof Uint8Array)) numericLeaves(v, out, `${path}${k}.`);
  }
  return out;
}

function outOfRange(v: number | bigint): (number | bigint)[] {
  if (typeof v === "bigint")
    return [0n, 1n, v + 1n, v + 16n, v ^ (1n << BigInt(int(48))), 0x7fffffffffffffffn, 0xffffffffffffffffn, v * 4096n];
  return [0, 1, v + 1, v + 16, v ^ (1 << int(31)), 0x7fffffff, 0xffffffff, -1, v * 4096];
}

type Mutation = { kind: string; what: string };
const MUTATIONS: Record<string, (dir: string) => Mutation | null> = {
  bitflip(dir) {
    const files = readdirSync(dir);
    const f = pick(files),
      size = statSync(join(dir, f)).size;
    if (!size) return null;
    const off = int(size),
      bit = int(8);
    const b = readFileSync(join(dir, f));
    b[off] ^= 1 << bit;
    writeFileSync(join(dir, f), b);
    return { kind: "bitflip", what: `${f} byte ${off} bit ${bit}` };
  },
  truncate(dir) {
    const f = pick(readdirSync(dir)),
      size = statSync(join(dir, f)).size;
    if (!size) return null;
    const n = int(size);
    truncateSync(join(dir, f), n);
    return { kind: "truncate", what: `${f} to ${n} of ${size} bytes` };
  },
  reorder(dir) {
    const f = pick(protoImages(dir)),
      d = decode(dir, f);
    if (!d) return null;
    // whole entries, or the items of a repeated field (VMAs, threads, handlers ...)
    const lists: any[][] = [d.kind === "PAGEMAP" ? d.entries.slice(1) : d.entries];
    const walk = (m: any) => {
      for (const k of Object.keys(m)) {
        const v = m[k];
        if (Array.isArray(v) && v.length > 1) lists.push(v);
        if (v && typeof v === "object" && !Array.isArray(v) && !(v instanceof Uint8Array)) walk(v);
      }
    };
    d.entries.forEach((e) => e && walk(e));
    const l = lists.filter((x) => x.length > 1);
    if (!l.length) return null;
    const list = pick(l),
      i = int(list.length),
      j = int(list.length);
    if (i === j) return null;
    if (list === lists[0] && d.kind === "PAGEMAP") {
      const t = d.entries[i + 1];
      d.entries[i + 1] = d.entries[j + 1];
      d.entries[j + 1] = t;
      if (d.payloads) {
        const p = d.payloads[i + 1];
        d.payloads[i + 1] = d.payloads[j + 1];
        d.payloads[j + 1] = p;
      }
    } else if (list === lists[0]) {
      const t = d.entries[i];
      d.entries[i] = d.entries[j];
      d.entries[j] = t;
      if (d.payloads) {
        const p = d.payloads[i];
        d.payloads[i] = d.payloads[j];
        d.payloads[j] = p;
      }
    } else {
      const t = list[i];
      list[i] = list[j];
      list[j] = t;
    }
    return encode(dir, f, d) ? { kind: "reorder", what: `${f}: items ${i} and ${j} swapped` } : null;
  },
  duplicate(dir) {
    const f = pick(protoImages(dir)),
      d = decode(dir, f);
    if (!d || !d.entries.length) return null;
    const i = d.kind === "PAGEMAP" ? 1 + int(d.entries.length - 1) : int(d.entries.length);
    if (i >= d.entries.length) return null;
    d.entries.splice(i, 0, d.entries[i]);
    d.payloads?.splice(i, 0, d.payloads[i]);
    return encode(dir, f, d) ? { kind: "duplicate", what: `${f}: entry ${i} twice` } : null;
  },
  missing(dir) {
    const f = pick(readdirSync(dir));
    unlinkSync(join(dir, f));
    return { kind: "missing", what: f };
  },
  "image copied over another"(dir) {
    // an image of the same kind in place of another (core-A over core-B, pagemap, mm ...)
    const files = protoImages(dir);
    const f = pick(files),
      prefix = f.replace(/[-\d]+\.img$/, "");
    const same = files.filter((g) => g !== f && g.replace(/[-\d]+\.img$/, "") === prefix);
    const g = same.length ? pick(same) : pick(files.filter((x) => x !== f));
    if (!g) return null;
    cpSync(join(dir, g), join(dir, f));
    return { kind: "image copied over another", what: `${g} over ${f}` };
  },
  "out of range"(dir) {
    const f = pick(protoImages(dir)),
      d = decode(dir, f);
    if (!d) return null;
    const leaves = d.entries.flatMap((e) => (e && typeof e === "object" ? numericLeaves(e) : []));
    if (!leaves.length) return null;
    for (let tries = 0; tries < 5; tries++) {
      const leaf = pick(leaves),
        old = leaf.get(),
        v = pick(outOfRange(old));
      leaf.set(v);
      if (encode(dir, f, d)) return { kind: "out of range", what: `${f}: ${leaf.name} ${old} -> ${v}` };
      leaf.set(old);
    }
    return null;
  },
};

// ---------- one case ----------

function leftovers(marker: string): number[] {
  const pids: number[] = [];
  for (const p of readdirSync("/proc")) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (readFileSync(`/proc/${p}/cmdline`, "latin1").split("\0").includes(marker) && isAlive(Number(p)))
        pids.push(Number(p));
    } catch {}
  }
  return pids;
}
/** Names of the nftables tables (any family) that criu-bun's network lock would have made. */
function nftTables(): string[] {
  const nl = new NetlinkSocket(NETLINK.NETFILTER);
  try {
    const names: string[] = [];
    // NFT_MSG_GETTABLE in subsystem NFNL_SUBSYS_NFTABLES; nfgenmsg of family NFPROTO_UNSPEC
    for (const m of nl.dump((10 << 8) | 1, new Uint8Array(4))) {
      const dv = new DataView(m.payload.buffer, m.payload.byteOffset, m.payload.length);
      for (let o = 4; o + 4 <= m.payload.length; ) {
        const len = dv.getUint16(o, true),
          type = dv.getUint16(o + 2, true) & 0x3fff;
        if (len < 4) break;
        if (type === 1 /* NFTA_TABLE_NAME */)
          names.push(new TextDecoder().decode(m.payload.subarray(o + 4, o + len)).replace(/\0+$/, ""));
        o += (len + 3) & ~3;
      }
    }
    return names.filter((n) => /criu/i.test(n));
  } finally {
    nl.close();
  }
}
const BAD_TEXT = [
  /internal error/i,
  /is not an object/,
  /undefined/,
  /Maximum call stack/,
  /^\s+at /m,
  /TypeError|RangeError|SyntaxError/,
];

test("fuzzed images: a healthy process or one clean error line, within the deadline, nothing left behind", async () => {
  const stats = new Map<string, Map<string, number>>();
  const count = (kind: string, outcome: string) => {
    const m = stats.get(kind) ?? stats.set(kind, new Map()).get(kind)!;
    m.set(outcome, (m.get(outcome) ?? 0) + 1);
  };
  const problems: string[] = [];
  const nftBefore = nftTables();
  const t0 = Date.now();
  for (let n = 0; n < CASES && Date.now() - t0 < BUDGET_MS; n++) {
    const name = WORKLOADS[n % WORKLOADS.length];
    const p = pristine.get(name)!;
    const dir = mkdtempSync(join(tmpdir(), "criu-bun-fuzz-"));
    copies.push(dir);
    cpSync(p.dir, dir, { recursive: true });
    const crafted = rand() < 0.3;
    const kind = pick(Object.keys(MUTATIONS).filter((k) => !crafted || (k !== "bitflip" && k !== "truncate")));
    let m: Mutation | null = null;
    for (let tries = 0; !m && tries < 10; tries++) m = MUTATIONS[kind](dir);
    if (!m) {
      rmSync(dir, { recursive: true, force: true });
      continue;
    }
    if (crafted) {
      m.kind = `crafted: ${m.kind}`;
      if (m.what !== "criu-bun.sum") writeManifest(dir);
    }
    const before = readdirSync(dir).sort().join(" ");
    // the workload's directory as at dump time (a healthy case before wrote go, result, reports)
    for (const f of readdirSync(p.marker)) if (!p.files.has(f)) rmSync(join(p.marker, f), { force: true });
    for (const [f, b] of p.files) writeFileSync(join(p.marker, f), b);
    const c0 = Date.now();
    const r = criuBun(["restore", "-d", "-D", dir], { timeoutMs: DEADLINE_MS });
    const ms = Date.now() - c0;
    const tag = `case ${n} (${name}, ${m.kind}: ${m.what})`;
    const lines = r.stderr.split("\n").filter((l) => l.trim());
    let outcome: string;
    if (ms >= DEADLINE_MS - 100 || r.code === 137) {
      outcome = "hang";
      problems.push(`${tag}: did not end within ${DEADLINE_MS} ms`);
    } else if (r.code === 0) {
      // restored: the workload must pass its own checks
      try {
        trigger(p.w);
        const res = await waitResult(p.w, 10_000);
        outcome = res.pass ? "restored, healthy" : crafted ? "restored, not the dumped process" : "restored, WRONG";
        if (!res.pass && !crafted) problems.push(`${tag}: restore succeeded but the workload says ${res.summary}`);
      } catch (e: any) {
        outcome = crafted ? "restored, not the dumped process" : "restored, WRONG";
        if (!crafted) problems.push(`${tag}: restore succeeded but ${String(e.message).split("\n")[0]}`);
      }
      // a crafted image may ask for what cannot be granted (an rlimit above the hard limit): a warning
      const unexpected = lines.filter((l) => !(crafted && l.startsWith("Warn: ")));
      if (unexpected.length) problems.push(`${tag}: restore succeeded with output: ${unexpected.join(" | ")}`);
    } else {
      outcome = "refused";
      if (lines.length !== 1 || !lines[0].startsWith("Error ("))
        problems.push(`${tag}: ${lines.length} lines of error output: ${lines.slice(0, 4).join(" | ")}`);
      else if (BAD_TEXT.some((re) => re.test(lines[0]))) {
        outcome = "refused, internal text";
        problems.push(`${tag}: ${lines[0]}`);
      }
    }
    count(m.kind, outcome);
    // nothing left behind
    const deadline = Date.now() + 5000;
    let left = leftovers(p.marker);
    while (left.length && outcome !== "restored, healthy" && Date.now() < deadline) {
      await Bun.sleep(20);
      left = leftovers(p.marker);
    }
    if (outcome.startsWith("restored")) {
      while (left.length && Date.now() < deadline) {
        await Bun.sleep(20);
        left = leftovers(p.marker);
      }
    }
    if (left.length && outcome === "restored, not the dumped process") {
      for (const pid of left)
        try {
          process.kill(pid, "SIGKILL");
        } catch {} // a wrong process may never finish
      left = [];
    }
    if (left.length) {
      problems.push(`${tag}: processes left: ${left.join(" ")}`);
      for (const pid of left)
        try {
          process.kill(pid, "SIGKILL");
        } catch {}
    }
    const after = readdirSync(dir)
      .filter((f) => !f.startsWith("stats-restore"))
      .sort()
      .join(" "); // a restore's own stats
    if (after !== before) problems.push(`${tag}: images directory changed: ${after}`);
    rmSync(dir, { recursive: true, force: true });
    if (problems.length > 20) break;
  }
  const nftAfter = nftTables();
  if (nftAfter.length > nftBefore.length) problems.push(`nftables tables left: ${nftAfter.join(" | ")}`);
  const total = [...stats.values()].reduce((s, m) => s + [...m.values()].reduce((a, b) => a + b, 0), 0);
  const lines = [...stats].map(([k, m]) => `  ${k}: ${[...m].map(([o, c]) => `${o} ${c}`).join(", ")}`);
  console.log(`fuzz: seed ${SEED}, ${total} cases in ${((Date.now() - t0) / 1000).toFixed(1)} s\n${lines.join("\n")}`);
  if (problems.length) console.log(`fuzz problems (seed ${SEED}):\n${problems.join("\n")}`);
  expect(problems).toEqual([]);
  // the budget decides how many run: about 2 s a case on a loaded 2-core machine, well under on CI
  expect(total).toBeGreaterThanOrEqual(Math.min(5, CASES));
}, 600_000);
