// `criu-bun show` as crit: decode (compact and --pretty) and encode round-trip every image of a
// real dump byte for byte, through files and through stdin/stdout; the JSON is crit's own text,
// crit's JSON encodes to the same bytes with criu-bun and criu-bun's with crit; info, x DIR
// ps|fds|mems|rss as crit prints them; --nopl; -o writes a 0600 file.
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildWorkloads, cleanup, criuBun, criuBunCommand, startWorkload, REPO_ROOT } from "./harness";
import { decodeImage, encodeImage } from "../src/images/image";
import { toCritJson, stringifyCrit, stringifyCritCompact, parseCritJson, fromCritJson } from "../src/images/json";
import { KINDS, kindByName, PAGEMAP_HEAD_SCHEMA, entrySchemaAt } from "../src/images/magic";
import { ghost_chunk_entrySchema } from "../src/images/gen/files_pb";
import { equals } from "@bufbuild/protobuf";
import { stripForCrit, fieldsCritLacks } from "./crit-schema";

setDefaultTimeout(120_000);
const CRIT = "/usr/bin/crit";
const haveCrit = existsSync(CRIT);
const tmp = mkdtempSync(join(tmpdir(), "criu-bun-show-"));
let dir = "";
let images: string[] = [];

beforeAll(async () => {
  await buildWorkloads();
  const w = await startWorkload("pipes"); // pipes with data in flight: images with payloads
  sessions.push(w.dir);
  dir = join(tmp, "img");
  require("node:fs").mkdirSync(dir);
  const r = criuBun(["dump", "-R", "-t", String(w.pid), "-D", dir, "--no-default-config"]);
  if (r.code !== 0) throw new Error(`dump failed: ${r.stderr}`);
  images = readdirSync(dir)
    .filter((f) => f.endsWith(".img") && !/^pages-\d+\.img$/.test(f))
    .sort();
}, 120_000);
/** Workloads dumped and left running leave children behind when their leader is killed (some in
 * sessions of their own): every process whose command line names a workload's directory goes. */
const sessions: string[] = [];
function killSessions() {
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    let cmd = "";
    try {
      cmd = readFileSync(`/proc/${e}/cmdline`, "utf8");
    } catch {
      continue;
    }
    if (sessions.some((d) => cmd.split("\0").includes(d)))
      try {
        process.kill(Number(e), "SIGKILL");
      } catch {}
  }
}
afterAll(() => {
  cleanup();
  killSessions();
  rmSync(tmp, { recursive: true, force: true });
});

function show(args: string[], stdin?: Uint8Array) {
  const r = Bun.spawnSync([...criuBunCommand(), "show", ...args], {
    stdin: stdin ?? "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  return { code: r.exitCode, out: r.stdout as Uint8Array, text: r.stdout.toString(), err: r.stderr.toString() };
}
function crit(args: string[], stdin?: Uint8Array) {
  const r = Bun.spawnSync([CRIT, ...args], { stdin: stdin ?? "ignore", stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, out: r.stdout as Uint8Array, text: r.stdout.toString() };
}

/** show's own text for an image (the code `show decode` runs), in-process: the bulk checks need no process per image */
function decodeText(buf: Uint8Array, pretty: boolean): string {
  const j = toCritJson(decodeImage(buf), pretty);
  return (pretty ? stringifyCrit(j) : stringifyCritCompact(j)) + "\n";
}
function encodeText(text: string): Uint8Array {
  const { kind, items } = fromCritJson(parseCritJson(text));
  return encodeImage(kind, items);
}

const schemaAt = (kind: string, i: number) => entrySchemaAt(kindByName.get(kind)!, i);
/** What crit 3.17 prints for an image: our decode without the fields crit's own schema lacks
 * (read from crit, see crit-schema.ts), and pagemap's field 2 under crit 3.17's name nr_pages. */
function critView(buf: Uint8Array, pretty: boolean): string {
  const img = decodeImage(buf);
  img.entries.forEach((m, i) => stripForCrit(schemaAt(img.kind, i), m));
  const j = toCritJson(img, pretty);
  if (img.kind === "PAGEMAP")
    for (const e of j.entries.slice(1)) {
      const { vaddr, compat_nr_pages, ...rest } = e as any;
      for (const k of Object.keys(e)) delete (e as any)[k];
      Object.assign(e, { vaddr, nr_pages: compat_nr_pages, ...rest });
    }
  return (pretty ? stringifyCrit(j) : stringifyCritCompact(j)) + "\n";
}
/** True when crit 3.17 knows every field set in the image (so its JSON holds all of it). */
function sameForCrit(buf: Uint8Array): boolean {
  const img = decodeImage(buf);
  const stripped = decodeImage(buf);
  stripped.entries.forEach((m, i) => stripForCrit(schemaAt(img.kind, i), m));
  return img.entries.every((m, i) => equals(schemaAt(img.kind, i), m as any, stripped.entries[i] as any));
}
/** Fields protobuf-es found on the wire that our schema does not name (a message we do not know whole). */
function unknownFields(m: any, path: string, out: string[]) {
  if (!m || typeof m !== "object" || m instanceof Uint8Array) return;
  if (m.$unknown?.length) out.push(`${path} (${m.$typeName}): field ${m.$unknown.map((u: any) => u.no).join(", ")}`);
  for (const [k, v] of Object.entries(m)) {
    if (k === "$unknown") continue;
    if (Array.isArray(v)) v.forEach((x, i) => unknownFields(x, `${path}.${k}[${i}]`, out));
    else unknownFields(v, `${path}.${k}`, out);
  }
}

describe("decode and encode", () => {
  test("every image of a dump: decode -> encode gives the same bytes (compact and --pretty)", () => {
    expect(images.length).toBeGreaterThan(8);
    expect(images.some((f) => f.startsWith("pipes-data"))).toBe(true);
    for (const f of images) {
      const orig = readFileSync(join(dir, f));
      for (const pretty of [false, true])
        expect(`${f}: ${Buffer.compare(Buffer.from(encodeText(decodeText(orig, pretty))), orig)}`).toBe(`${f}: 0`);
    }
  });

  test("the executable: decode -i/-o and encode -i/-o, and through stdin/stdout, byte for byte; -o files are 0600", () => {
    for (const f of [images.find((x) => x.startsWith("core-"))!, images.find((x) => x.startsWith("pipes-data"))!]) {
      const orig = readFileSync(join(dir, f));
      const j = join(tmp, `${f}.json`),
        back = join(tmp, `${f}.back`);
      expect(show(["decode", "-i", join(dir, f), "-o", j, "--pretty"]).code).toBe(0);
      expect(readFileSync(j, "utf8")).toBe(decodeText(orig, true));
      const e = show(["encode", "-i", j, "-o", back]);
      expect(`${f} ${e.code} ${e.err}`).toBe(`${f} 0 `);
      expect(`${f}: ${Buffer.compare(readFileSync(back), orig)}`).toBe(`${f}: 0`);
      expect(statSync(back).mode & 0o777).toBe(0o600);
      const dec = show(["decode"], orig);
      expect(dec.text).toBe(decodeText(orig, false));
      const viaPipe = show(["encode"], dec.out);
      expect(`${f}: ${Buffer.compare(Buffer.from(viaPipe.out), orig)}`).toBe(`${f}: 0`);
    }
  });

  test('--nopl leaves payloads out; without it they are under "extra"', () => {
    const f = join(dir, images.find((x) => x.startsWith("pipes-data"))!);
    expect(show(["decode", "-i", f]).text).toContain('"extra": ');
    const nopl = show(["decode", "-i", f, "--nopl"]);
    expect(nopl.code).toBe(0);
    expect(nopl.text).not.toContain('"extra"');
    expect(JSON.parse(nopl.text).magic).toBe("PIPES_DATA");
  });

  test("bad input: one error line, exit 1", () => {
    writeFileSync(join(tmp, "bad.json"), "{ not json");
    let r = show(["encode", "-i", join(tmp, "bad.json")]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^Error \(show\): .*bad\.json: not JSON/);
    expect(r.err.trim().split("\n").length).toBe(1);
    r = show(["decode", "-i", join(tmp, "nothere.img")]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(
      /^Error \(show\): cannot read .*nothere\.img: ENOENT \(errno 2: No such file or directory\)\n$/
    );
    r = show(["frob"]);
    expect(r.code).toBe(1);
  });
});

describe.skipIf(!haveCrit)("against crit", () => {
  test("decode prints crit's text (compact and --pretty) for every kind, minus the fields crit 3.17 does not know; crit's JSON encodes to the same bytes here, ours with crit", () => {
    for (const [n, f] of images.entries()) {
      const p = join(dir, f);
      const orig = readFileSync(p);
      for (const pretty of n % 4 === 0 ? [false, true] : [false]) {
        const theirs = crit(["decode", "-i", p, ...(pretty ? ["--pretty"] : [])]);
        expect(`${f}: crit exit ${theirs.code}`).toBe(`${f}: crit exit 0`);
        expect(`${f}\n${critView(orig, pretty)}`).toBe(`${f}\n${theirs.text}`);
        if (!sameForCrit(orig)) continue; // has fields crit drops: its JSON cannot give back these bytes
        // crit's JSON -> criu-bun's encoder
        expect(`${f}: ${Buffer.compare(Buffer.from(encodeText(theirs.text)), orig)}`).toBe(`${f}: 0`);
        // criu-bun's JSON -> crit encode (a few: each is a python start)
        if (!pretty && n % 6 === 0)
          expect(
            `${f}: ${Buffer.compare(Buffer.from(crit(["encode"], new TextEncoder().encode(decodeText(orig, false))).out), orig)}`
          ).toBe(`${f}: 0`);
      }
    }
  }, 300_000);

  test("info and x DIR ps|fds|mems|rss print what crit prints", () => {
    // crit's info: json.dump({"magic", "count"}, indent=4) (crit 3.17's own info cannot read a file: not compared)
    const core = join(dir, images.find((f) => f.startsWith("core-"))!);
    expect(show(["info", "-i", core]).text).toBe('{\n    "magic": "CORE",\n    "count": 1\n}\n');
    for (const what of ["ps", "fds", "mems"]) expect(show(["x", dir, what]).text).toBe(crit(["x", dir, what]).text);
    // crit 3.17's rss can fall off the end of the VMA list (IndexError) after printing most of it
    const c = crit(["x", dir, "rss"]);
    const o = show(["x", dir, "rss"]);
    expect(o.code).toBe(0);
    if (c.code === 0) expect(o.text).toBe(c.text);
    else expect(o.text.startsWith(c.text)).toBe(true);
    expect(c.text.length).toBeGreaterThan(0);
  });
});

test("show's own -o is its output, not criu's log; options before `show` are still criu's", () => {
  const f = join(dir, "inventory.img");
  const out = join(tmp, "inv.json");
  const r = Bun.spawnSync([...criuBunCommand(), "-v4", "show", "decode", "-i", f, "-o", out, "--pretty"], {
    stdout: "pipe",
    stderr: "pipe",
  });
  expect(r.exitCode).toBe(0);
  expect(JSON.parse(readFileSync(out, "utf8")).magic).toBe("INVENTORY");
  expect(show(["show", f]).text).toBe(readFileSync(out, "utf8"));
});

// CRIU 4.2's own images: real workloads dumped by the reference CRIU (left running), then every
// image through show decode -> show encode, and through crit 3.17 for the text.
const PEER = process.env.CRIU_PEER ?? join(REPO_ROOT, "..", "shared", "tools", "criu-4.2");
const havePeer = existsSync(PEER);
if (!havePeer)
  console.warn(
    `SKIP show over CRIU 4.2's images: ${PEER} is missing (the reference CRIU, see ../shared/tools/README.md)`
  );

// Fields CRIU 4.2 defines that Debian's crit 3.17 does not know (it drops them when it decodes),
// besides pagemap_entry field 2, which crit 3.17 calls nr_pages and CRIU 4.2 compat_nr_pages (its
// page count moved to field 5, nr_pages). README's show section lists the same.
const CRIT317_LACKS = [
  "cg_controller_entry.is_threaded (3)",
  "core_entry.ti_loongarch64 (12)",
  "core_entry.ti_riscv64 (13)",
  "creds_entry.cap_amb (19)",
  "creds_entry.no_new_privs (18)",
  "file_entry.pidfd (22)",
  "inet_sk_entry.tcp_opts (20)",
  "inventory_entry.allow_uprobes (14)",
  "inventory_entry.dump_criu_run_id (13)",
  "inventory_entry.plugins_entry (12)",
  "ip_opts_entry.pktinfo (5)",
  "ip_opts_entry.tos (6)",
  "ip_opts_entry.ttl (7)",
  "memfd_inode_entry.mode (9)",
  "netns_entry.ipv4_sysctl (10)",
  "pagemap_entry.nr_pages (5)",
  "task_core_entry.membarrier_registration_mask (22)",
  "task_core_entry.stop_signo (21)",
  "thread_core_entry.cg_set (16)",
  "thread_info_aarch64.pac_keys (5)",
  "user_x86_xsave_entry.cet (9)",
];

describe.skipIf(!havePeer)("CRIU 4.2's images", () => {
  const peerImages: string[] = [];
  const byKind = new Map<string, string[]>();
  beforeAll(async () => {
    for (const name of [
      "tree",
      "pipes",
      "memfd",
      "deleted",
      "fifo",
      "unix",
      "seccomp",
      "locks",
      "epoll",
      "inotify",
      "signals",
    ]) {
      const w = await startWorkload(name);
      sessions.push(w.dir);
      const d = join(tmp, `criu42-${name}`);
      mkdirSync(d);
      const r = Bun.spawnSync(
        [
          PEER,
          "dump",
          "-t",
          String(w.pid),
          "-D",
          d,
          "-o",
          "dump.log",
          "-v4",
          "--leave-running",
          "--file-locks",
          "--ext-unix-sk",
        ],
        { cwd: d, stdout: "pipe", stderr: "pipe" }
      );
      if (r.exitCode !== 0)
        throw new Error(
          `criu-4.2 dump of ${name} failed: ${readFileSync(join(d, "dump.log"), "utf8")
            .split("\n")
            .filter((l) => l.includes("Error") && !l.includes("RLIMIT_NOFILE"))
            .slice(0, 3)
            .join("\n")}`
        );
      for (const f of readdirSync(d).filter(
        (f) => (f.endsWith(".img") && !/^pages-\d+\.img$/.test(f)) || f === "stats-dump"
      )) {
        const p = join(d, f);
        peerImages.push(p);
        const kind = decodeImage(readFileSync(p), p).kind;
        if (!byKind.has(kind)) byKind.set(kind, []);
        byKind.get(kind)!.push(p);
      }
    }
    cleanup();
    killSessions();
  }, 240_000);

  test("every image CRIU 4.2 wrote: our schema names every field on the wire, and decode -> encode gives the same bytes (compact and --pretty)", () => {
    expect(peerImages.length).toBeGreaterThan(60);
    for (const k of [
      "INVENTORY",
      "CORE",
      "PAGEMAP",
      "PSTREE",
      "MM",
      "FILES",
      "FDINFO",
      "IDS",
      "FS",
      "PIPES_DATA",
      "FIFO_DATA",
      "MEMFD_INODE",
      "GHOST_FILE",
      "REMAP_FPATH",
      "SK_QUEUES",
      "FILE_LOCKS",
      "SECCOMP",
      "TIMENS",
      "STATS",
    ])
      expect(`${k}: ${byKind.has(k)}`).toBe(`${k}: true`);
    for (const p of peerImages) {
      const orig = readFileSync(p);
      const unknown: string[] = [];
      const img = decodeImage(orig, p);
      img.entries.forEach((m, i) => unknownFields(m, `${img.kind}[${i}]`, unknown));
      expect(`${p}: ${unknown.join("; ")}`).toBe(`${p}: `);
      for (const pretty of [false, true])
        expect(`${p}: ${Buffer.compare(Buffer.from(encodeText(decodeText(orig, pretty))), orig)}`).toBe(`${p}: 0`);
    }
  });

  test("the executable: show decode | show encode gives back each kind's image byte for byte; info counts its entries", () => {
    for (const [kind, files] of byKind) {
      const f = files[0];
      const orig = readFileSync(f);
      const dec = show(["decode", "-i", f]);
      expect(`${kind} ${dec.code} ${dec.err}`).toBe(`${kind} 0 `);
      const enc = show(["encode"], dec.out);
      expect(`${kind}: ${Buffer.compare(Buffer.from(enc.out), orig)}`).toBe(`${kind}: 0`);
      const info = JSON.parse(show(["info", "-i", f]).text);
      expect(info.magic).toBe(kind);
      expect(info.count).toBe(JSON.parse(dec.text).entries.length - (kind === "PAGEMAP" ? 1 : 0));
    }
  });

  test.skipIf(!haveCrit)(
    "crit 3.17 prints the same JSON for one image of each kind (core, pagemap, inventory included) but for the fields it does not know; crit decode -> show encode gives CRIU's bytes back where crit knows them all",
    async () => {
      const picks = [...byKind.entries()].map(([kind, files]) => [kind, files[0]] as const);
      const outs = await Promise.all(
        picks.map(async ([, f]) => {
          const proc = Bun.spawn([CRIT, "decode", "-i", f], { stdout: "pipe", stderr: "pipe" });
          const text = await new Response(proc.stdout).text();
          return { code: await proc.exited, text };
        })
      );
      picks.forEach(([kind, f], i) => {
        expect(`${kind}: crit exit ${outs[i].code}`).toBe(`${kind}: crit exit 0`);
        expect(`${kind} ${f}\n${critView(readFileSync(f), false)}`).toBe(`${kind} ${f}\n${outs[i].text}`);
        // crit's JSON holds the whole image when crit knows every field set: show encode gives back CRIU's bytes
        if (sameForCrit(readFileSync(f))) {
          const enc = show(["encode"], new TextEncoder().encode(outs[i].text));
          expect(`${kind}: ${Buffer.compare(Buffer.from(enc.out), readFileSync(f))}`).toBe(`${kind}: 0`);
        }
      });
    },
    120_000
  );

  test("a raw image (pages-N.img: page contents, no magic) is refused in one line", () => {
    const d = join(tmp, "criu42-pipes");
    const pages = readdirSync(d).find((f) => /^pages-\d+\.img$/.test(f))!;
    const r = show(["decode", "-i", join(d, pages)]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(
      /^Error \(image\): .*pages-\d+\.img: unknown magic 0x[0-9a-f]+ \(not a CRIU image, or a raw image like pages-N\.img\) at offset 0\n$/
    );
  });
});

test.skipIf(!haveCrit)("the fields crit 3.17 does not know are exactly CRIU 4.x's additions listed in README", () => {
  const lacks = new Set<string>();
  for (const k of KINDS) if (k.schema) fieldsCritLacks(k.schema, lacks);
  fieldsCritLacks(PAGEMAP_HEAD_SCHEMA, lacks);
  fieldsCritLacks(ghost_chunk_entrySchema, lacks);
  const criu = [...lacks].filter((x) => Number(/\((\d+)\)$/.exec(x)![1]) < 1000).sort();
  expect(criu).toEqual([...CRIT317_LACKS].sort());
  const readme = readFileSync(join(REPO_ROOT, "README.md"), "utf8");
  for (const x of CRIT317_LACKS) expect(`${x}: ${readme.includes(x.replace(/ \(\d+\)$/, ""))}`).toBe(`${x}: true`);
});
