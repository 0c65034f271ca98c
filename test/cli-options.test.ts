// criu's command line: the option table (src/cli/criu-options.ts) against CRIU 4.2's, getopt_long's
// semantics, every long and short option in every spelling, config files in criu's four places,
// logging with -o/-v, and --version as LXC, runc and go-criu read it.
import { describe, test, expect, beforeAll, afterAll, setDefaultTimeout } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, rmdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CRIU_OPTIONS, CRIU_SHORT_OPTS, refusal, type CriuOption } from "../src/cli/criu-options";
import { parseCli } from "../src/cli/parse";
import { UsageError } from "../src/cli/getopt";
import { checkSupport } from "../src/cli/support";
import { buildWorkloads, cleanup, criuBun, criuBunCommand, startWorkload, trigger, waitResult } from "./harness";
import { waitReaped } from "./engine-helpers";

const CRIU_42 = "/work/shared/tools/criu-4.2";
setDefaultTimeout(60_000); // each run of the executable is a process start; this machine may be busy
const NOCONF = ["--no-default-config"];
const env: Record<string, string> = { PATH: process.env.PATH ?? "/usr/bin:/bin" };
const tmp = mkdtempSync(join(tmpdir(), "criu-bun-cli-"));
afterAll(() => {
  cleanup();
  rmSync(tmp, { recursive: true, force: true });
});

describe("option table", () => {
  test("85 long options, unique names and letters, short string as criu's", () => {
    expect(CRIU_OPTIONS.length).toBe(85);
    expect(new Set(CRIU_OPTIONS.map((o) => o.name)).size).toBe(85);
    const shorts = CRIU_OPTIONS.filter((o) => o.short).map((o) => o.short!);
    expect(new Set(shorts).size).toBe(shorts.length);
    // every letter of "dSsRt:hD:o:v::x::Vr:jJ:lW:L:M:" with its argument kind
    const kinds = new Map<string, string>();
    for (const m of CRIU_SHORT_OPTS.matchAll(/([A-Za-z])(:{0,2})/g))
      kinds.set(m[1], ["none", "required", "optional"][m[2].length]);
    expect(new Set(shorts)).toEqual(new Set(kinds.keys()));
    for (const o of CRIU_OPTIONS) if (o.short) expect(`${o.short}:${o.arg}`).toBe(`${o.short}:${kinds.get(o.short)}`);
  });

  test.skipIf(!existsSync(CRIU_42))(
    "every name is one CRIU 4.2's binary knows (its getopt table strings), --no- forms exactly criu's",
    () => {
      const strings = readFileSync(CRIU_42).toString("latin1");
      for (const o of CRIU_OPTIONS) {
        expect(strings.includes(`${o.name}\0`)).toBe(true);
        expect(`${o.name}: ${strings.includes(`\0no-${o.name}\0`)}`).toBe(`${o.name}: ${!!o.negatable}`);
      }
      expect(strings.includes(`${CRIU_SHORT_OPTS}\0`)).toBe(true);
    }
  );
});

const parse = (...argv: string[]) => parseCli([...NOCONF, ...argv], env);
const usageError = (...argv: string[]) => {
  try {
    parse(...argv);
  } catch (e) {
    if (e instanceof UsageError) return e.message;
    throw e;
  }
  throw new Error(`no error for ${argv.join(" ")}`);
};

describe("getopt_long semantics", () => {
  test("verbosity: -v adds one, -vv two, -vN and --verbosity=N set, bare --verbosity adds one, -verbosity=0 is -v with 'erbosity=0'", () => {
    expect(parse("check").opts.verbosity).toBe(2);
    expect(parse("check", "-v").opts.verbosity).toBe(3);
    expect(parse("check", "-vv").opts.verbosity).toBe(4);
    expect(parse("check", "-vvv").opts.verbosity).toBe(5);
    expect(parse("check", "-v4").opts.verbosity).toBe(4);
    expect(parse("check", "-v0").opts.verbosity).toBe(0);
    expect(parse("check", "--verbosity=1").opts.verbosity).toBe(1);
    expect(parse("check", "--verbosity").opts.verbosity).toBe(3);
    expect(parse("check", "-verbosity=0").opts.verbosity).toBe(0);
    expect(parse("check", "-v", "-v").opts.verbosity).toBe(4);
    // an optional argument is never taken from the next word
    const p = parse("check", "--verbosity", "4");
    expect(p.opts.verbosity).toBe(3);
    expect(p.args).toEqual(["4"]);
  });

  test("bundled flags, attached and separate arguments, permutation, --, prefixes, --no- forms", () => {
    let p = parse("-dj", "restore", "-D3", "--no-shell-job");
    expect(p.command).toBe("restore");
    expect(p.opts.restoreDetached).toBe(true);
    expect(p.opts.shellJob).toBe(false);
    expect(p.opts.imagesDir).toBe("3");
    p = parse("-djD", "5", "restore");
    expect(p.opts.imagesDir).toBe("5");
    expect(p.opts.shellJob).toBe(true);
    p = parse("dump", "-t", "123", "--tcp-est", "--ghost-lim", "1M");
    expect(p.opts.tree).toBe(123);
    expect(p.opts.tcpEstablished).toBe(true);
    expect(p.opts.ghostLimit).toBe("1M");
    // a required argument takes the next word whatever it looks like
    expect(parse("dump", "-o", "-v4").opts.logFile).toBe("-v4");
    expect(parse("dump", "--log-file", "--tree").opts.logFile).toBe("--tree");
    // -s and -R share criu's final state: the last one wins
    p = parse("dump", "-s", "-R");
    expect([p.opts.leaveStopped, p.opts.leaveRunning]).toEqual([false, true]);
    // --daemon and --restore-detached are one field; their common prefix is not ambiguous
    expect(parse("restore", "--daemon").opts.restoreDetached).toBe(true);
    p = parse("restore", "-D", "d", "--exec-cmd", "--", "sh", "-c", "true");
    expect(p.args).toEqual(["sh", "-c", "true"]);
    expect(p.opts.execCmd).toBe(true);
    // repeatable options collect their values in order
    expect(parse("dump", "--external", "a", "--external=b").opts.external).toEqual(["a", "b"]);
    expect(parse("check", "--feature", "mnt_id", "--feature", "tcp_half_closed").opts.feature).toEqual([
      "mnt_id",
      "tcp_half_closed",
    ]);
  });

  test("glibc's errors", () => {
    expect(usageError("dump", "--bogus")).toBe("unrecognized option '--bogus'");
    expect(usageError("dump", "-q")).toBe("invalid option -- 'q'");
    expect(usageError("dump", "-t")).toBe("option requires an argument -- 't'");
    expect(usageError("dump", "--tree")).toBe("option '--tree' requires an argument");
    expect(usageError("dump", "--shell-job=yes")).toBe("option '--shell-job' doesn't allow an argument");
    expect(usageError("dump", "--re")).toMatch(
      /^option '--re' is ambiguous; possibilities: '--restore-detached' '--restore-sibling'/
    );
    expect(usageError("dump", "-t", "0")).toBe("invalid argument for -t: 0");
    expect(usageError("dump", "--tree=abc")).toBe("invalid argument for --tree: abc");
    expect(usageError("page-server", "--port", "x")).toBe("invalid argument for --port: x");
    expect(usageError("restore", "--manage-cgroups=bogus")).toMatch(/^Unknown cgroups mode `bogus' selected/);
    expect(usageError("dump", "--network-lock", "pf")).toMatch(/^Invalid value for --network-lock: pf/);
    expect(usageError("dump", "--ms")).toMatch(/--ms is deprecated/);
  });

  test("--manage-cgroups: every criu mode parses; bare means soft", () => {
    for (const m of ["none", "props", "soft", "full", "strict", "ignore"])
      expect(parse("restore", `--manage-cgroups=${m}`).opts.manageCgroups).toBe(m);
    expect(parse("restore", "--manage-cgroups").opts.manageCgroups).toBe(true);
  });
});

/** A value criu accepts for each option with an argument (numbers where criu takes any string, to catch "-D 3"). */
function sample(o: CriuOption): string {
  const s: Record<string, string> = {
    "manage-cgroups": "soft",
    "network-lock": "nftables",
    "pre-dump-mode": "read",
    "file-validation": "filesize",
    "empty-ns": "net",
    "cpu-cap": "fpu",
    "veth-pair": "7=8",
    "join-ns": "5:6",
    "ext-mount-map": "5:6",
    "ext-unix-sk": "5",
  };
  return s[o.name] ?? "5";
}

interface Form {
  argv: string[];
  expect: unknown;
}
function forms(o: CriuOption): Form[] {
  const v = sample(o);
  const val = (x: unknown) => (o.repeat ? [x] : x);
  const out: Form[] = [];
  if (o.arg === "none") {
    out.push({ argv: [`--${o.name}`], expect: true });
    if (o.negatable) out.push({ argv: [`--no-${o.name}`], expect: false });
    if (o.short) out.push({ argv: [`-${o.short}`], expect: true });
  } else if (o.arg === "required") {
    out.push({ argv: [`--${o.name}=${v}`], expect: val(v) }, { argv: [`--${o.name}`, v], expect: val(v) });
    if (o.short) out.push({ argv: [`-${o.short}${v}`], expect: val(v) }, { argv: [`-${o.short}`, v], expect: val(v) });
  } else {
    out.push({ argv: [`--${o.name}=${v}`], expect: val(v) }, { argv: [`--${o.name}`], expect: val(true) });
    if (o.short) out.push({ argv: [`-${o.short}${v}`], expect: val(v) }, { argv: [`-${o.short}`], expect: val(true) });
  }
  return out;
}

const SPECIAL = new Set([
  "help",
  "version",
  "ms",
  "verbosity",
  "config",
  "no-default-config",
  "tree",
  "leave-stopped",
  "leave-running",
]);

describe("every option of CRIU 4.2, every spelling", () => {
  for (const o of CRIU_OPTIONS) {
    test(`--${o.name}${o.short ? ` / -${o.short}` : ""} (${o.support})`, () => {
      const cmd = o.commands[0];
      for (const f of forms(o)) {
        if (SPECIAL.has(o.name)) {
          // parsed, with their own effects (checked in the tests around)
          if (o.name === "ms") {
            expect(usageError(cmd, ...f.argv)).toMatch(/deprecated/);
            continue;
          }
          if (o.name === "config") continue; // reads the file: see config tests
          const p = parse(cmd, ...f.argv);
          if (o.name === "help") expect(p.help).toBe(true);
          else if (o.name === "version") expect(p.version).toBe(true);
          else if (o.name === "tree") expect(p.opts.tree).toBe(5);
          else if (o.name === "verbosity") expect(p.opts.verbosity).toBe(f.expect === true ? 3 : 5);
          else if (o.name === "leave-stopped") expect(p.opts.leaveStopped).toBe(true);
          else if (o.name === "leave-running") expect(p.opts.leaveRunning).toBe(true);
          continue;
        }
        const p = parse(cmd, ...f.argv);
        expect(p.command).toBe(cmd);
        expect(p.args).toEqual([]);
        expect(p.opts[o.key]).toEqual(f.expect);
        const v = checkSupport(cmd, p.given);
        const withValue = JSON.stringify(f.expect).includes(`"${sample(o)}"`);
        if (o.support === "no" && f.expect !== false) expect(v.refused).toBe(refusal(o.name));
        else if (o.name === "ext-unix-sk" && withValue)
          expect(v.refused).toStartWith("--ext-unix-sk=5: not supported by criu-bun yet");
        else expect(v.refused).toBeUndefined();
      }
    });
  }
});

describe("the executable", () => {
  test("each unsupported option: one line, exit 1, never 'unknown option'", () => {
    const no = CRIU_OPTIONS.filter((o) => o.support === "no");
    expect(no.length).toBeGreaterThan(0);
    for (const o of no) {
      const cmd = o.commands[0];
      const arg = o.arg === "none" ? [`--${o.name}`] : [`--${o.name}=${sample(o)}`];
      if (o.name === "restore-sibling") arg.push("-d"); // criu: only with --restore-detached
      if (o.name === "exec-cmd") arg.push("--", "true"); // criu: the command follows --
      const r = criuBun([cmd, ...NOCONF, "-D", tmp, ...arg], { env });
      expect(`${o.name}: ${r.code} ${r.stderr}`).toBe(`${o.name}: 1 Error (${cmd}): ${refusal(o.name)}\n`);
    }
  }, 120_000);

  test("an unknown option, an extra argument, a missing command: one error line and a hint, exit 1", () => {
    let r = criuBun(["dump", "--frobnicate"], { env });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("Error (cli): unrecognized option '--frobnicate'\nTry -h|--help for more info\n");
    r = criuBun(["check", "--no-default-config", "extra"], { env });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("Error (cli): excessive parameter for command check: extra\n");
    r = criuBun(["-v4"], { env });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("command is required");
  });

  test("-o: errors go to the log, the console stays quiet; -v0 silences them; -o - logs to stdout", () => {
    const d = mkdtempSync(join(tmp, "log-"));
    let r = criuBun(["restore", "-D", d, "-o", "r.log", ...NOCONF], { env });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("");
    const text = readFileSync(join(d, "r.log"), "utf8");
    expect(text).toMatch(/^Error \(restore\): /m);
    r = criuBun(["restore", "-D", d, "-v0", ...NOCONF], { env });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("");
    r = criuBun(["restore", "-D", d, "-o", "-", ...NOCONF], { env });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(/^Error \(restore\): /m);
    // from -v3 on every log line carries criu's timestamp
    r = criuBun(["restore", "-D", d, "-v3", "-o", "t.log", ...NOCONF], { env });
    expect(readFileSync(join(d, "t.log"), "utf8")).toMatch(/^\(\d\d\.\d{6}\) Version: 4\.2 /);
  });

  test("numeric values are values: dump -D 3 -o 5, restore --pidfile 123", async () => {
    await buildWorkloads();
    const w = await startWorkload("counter");
    const cwd = mkdtempSync(join(tmp, "num-"));
    mkdirSync(join(cwd, "3"));
    let r = criuBun(["dump", "-t", String(w.pid), "-D", "3", "-o", "5", "-v4", ...NOCONF], { cwd, env });
    expect(r.code).toBe(0);
    expect(readFileSync(join(cwd, "3", "5"), "utf8")).toContain("Dumping finished");
    await waitReaped(w.pid);
    r = criuBun(["restore", "-d", "-D", "3", "--pidfile", "123", "-o", "6", ...NOCONF], { cwd, env });
    expect(`${r.code} ${r.stderr}${readFileSync(join(cwd, "3", "6"), "utf8")}`).toBe("0 ");
    expect(readFileSync(join(cwd, "3", "123"), "utf8").trim()).toBe(String(w.pid));
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
  }, 60_000);
});

describe("config files", () => {
  const cfgDir = join(tmp, "cfg");
  mkdirSync(cfgDir, { recursive: true });
  /** Run `criu-bun check` with a log file named by a config option; which log appears tells which config applied. */
  function runWith(opts: { global?: string; user?: string; envFile?: string; config?: string; extra?: string[] }) {
    const home = mkdtempSync(join(cfgDir, "home-"));
    const e: Record<string, string> = { PATH: process.env.PATH!, HOME: home };
    if (opts.user) {
      mkdirSync(join(home, ".criu"));
      writeFileSync(join(home, ".criu", "default.conf"), opts.user);
    }
    if (opts.envFile) {
      const f = join(home, "env.conf");
      writeFileSync(f, opts.envFile);
      e.CRIU_CONFIG_FILE = f;
    }
    const args = ["check", ...(opts.extra ?? [])];
    if (opts.config) {
      const f = join(home, "cmd.conf");
      writeFileSync(f, opts.config);
      args.push("--config", f);
    }
    let cmd = [...criuBunCommand(), ...args];
    if (opts.global !== undefined) {
      // /etc/criu/default.conf seen only by this run: a private mount namespace with a directory bound over /etc/criu
      const g = mkdtempSync(join(cfgDir, "etc-"));
      writeFileSync(join(g, "default.conf"), opts.global);
      cmd = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        `mount --bind ${g} /etc/criu && exec "$@"`,
        "sh",
        ...cmd,
      ];
    }
    const r = Bun.spawnSync(cmd, { env: e, stdout: "pipe", stderr: "pipe" });
    return { code: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
  }
  const logLine = (name: string) => `log-file ${join(cfgDir, name)}\nverbosity=4   # comment\n`;
  let madeEtc = false;
  beforeAll(() => {
    if (!existsSync("/etc/criu")) {
      mkdirSync("/etc/criu");
      madeEtc = true;
    }
  });
  afterAll(() => {
    if (madeEtc) rmdirSync("/etc/criu");
  });

  test("an option in each of the four places takes effect", () => {
    for (const [where, o] of [
      ["global", { global: logLine("global.log") }],
      ["user", { user: logLine("user.log") }],
      ["env", { envFile: logLine("env.log") }],
      ["config", { config: logLine("config.log") }],
    ] as const) {
      const r = runWith(o);
      expect(`${where}: ${r.code} ${r.stderr}`).toBe(`${where}: 0 `);
      expect(r.stdout).toBe("Looks good.\n");
      expect(readFileSync(join(cfgDir, `${where}.log`), "utf8")).toContain("Parsed config file");
    }
  });

  test("later places override earlier ones; the command line overrides them all", () => {
    const r = runWith({ user: logLine("u2.log"), envFile: logLine("e2.log"), extra: ["-o", join(cfgDir, "argv.log")] });
    expect(r.code).toBe(0);
    expect(existsSync(join(cfgDir, "u2.log")) || existsSync(join(cfgDir, "e2.log"))).toBe(false);
    expect(existsSync(join(cfgDir, "argv.log"))).toBe(true);
    const r2 = runWith({ user: logLine("u3.log"), envFile: logLine("e3.log") });
    expect(r2.code).toBe(0);
    expect([existsSync(join(cfgDir, "u3.log")), existsSync(join(cfgDir, "e3.log"))]).toEqual([false, true]);
  });

  test("--no-default-config and --config skip the default files (not CRIU_CONFIG_FILE)", () => {
    let r = runWith({ global: logLine("g4.log"), user: logLine("u4.log"), extra: ["--no-default-config"] });
    expect(r.code).toBe(0);
    expect([existsSync(join(cfgDir, "g4.log")), existsSync(join(cfgDir, "u4.log"))]).toEqual([false, false]);
    r = runWith({ global: logLine("g5.log"), user: logLine("u5.log"), config: "# only a comment\n\n" });
    expect(r.code).toBe(0);
    expect([existsSync(join(cfgDir, "g5.log")), existsSync(join(cfgDir, "u5.log"))]).toEqual([false, false]);
    r = runWith({ envFile: logLine("e5.log"), extra: ["--no-default-config"] });
    expect(existsSync(join(cfgDir, "e5.log"))).toBe(true);
  });

  test("quoted values, and an option criu does not implement set in a config file is refused naming the file and line", () => {
    let r = runWith({ config: `log-file "${join(cfgDir, "q x.log")}"  # spaces inside quotes\n` });
    expect(r.code).toBe(0);
    expect(existsSync(join(cfgDir, "q x.log"))).toBe(true);
    r = runWith({ user: "\n# tls for the page server\nlazy-pages\n" });
    expect(r.code).toBe(0); // check does not use --lazy-pages
    const home = mkdtempSync(join(cfgDir, "home-"));
    const f = join(home, "c.conf");
    writeFileSync(f, "tcp-established\nstream\n");
    const rr = criuBun(["dump", "-t", "1", "--config", f], { env });
    expect(rr.code).toBe(1);
    expect(rr.stderr).toBe(
      `Error (dump): --stream: not supported by criu-bun yet (criu-image-streamer's socket protocol is not implemented; dump to an images directory) (${f}:2)\n`
    );
  });

  test("malformed lines: an error naming the file and line", () => {
    const cases: [string, RegExp][] = [
      ["tcp-established\nlog-file a b\n", /:2: more than one value: 'a b'/],
      ["shell-job yes\n", /:1: shell-job takes no value \('yes'\)/],
      ["\n\nno-such-option\n", /:3: unrecognized option '--no-such-option'/],
      ['lsm-profile "apparmor:x\n', /:1: unterminated quoted value/],
      ["tree\n", /:1: option '--tree' requires an argument/],
    ];
    for (const [text, re] of cases) {
      const r = runWith({ config: text });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(re);
      expect(r.stderr).toContain("cmd.conf:");
      expect(r.stderr.trimEnd().split("\n").length).toBe(2); // the error and the --help hint
    }
  });
});

// --- --version as its readers parse it ------------------------------------------------------
/** LXC's criu_version_ok(): fscanf("Version: %1023[^\n]s"), then '\n', then strcmp(version, "2.0") >= 0. */
function lxcAccepts(out: string, need = "2.0"): { ok: boolean; version?: string } {
  const m = /^Version: ([^\n]{1,1023})/.exec(out);
  if (!m || out[m[0].length] !== "\n") return { ok: false };
  return { ok: m[1] >= need ? true : false, version: m[1] };
}
/** LXC's cmp_version(): sscanf("%d.%d.%d") on both, major, then minor, then patch. */
function lxcCmpVersion(v1: string, v2: string): number {
  const oct = (v: string) => {
    const m = /^(-?\d+)(?:\.(-?\d+)(?:\.(-?\d+))?)?/.exec(v);
    return m ? [m[1], m[2], m[3]].map((x) => (x === undefined ? -1 : Number(x))) : null;
  };
  const a = oct(v1),
    b = oct(v2);
  if (!a || !b) return -1;
  for (let i = 0; i < 2; i++) if (a[i] !== b[i]) return a[i] > b[i] ? 1 : -1;
  return a[2] > b[2] ? 1 : a[2] === b[2] ? 0 : -1;
}
/**
 * runc's and go-criu's reading of `criu --version`: a '-' anywhere means a git build
 * ("GitID: vX.Y[.Z]-..."), else "Version: %d.%d.%d\n" or "Version: %d.%d\n"; x*10000 + y*100 + z.
 */
function runcVersion(out: string): number {
  const dash = out.indexOf("-");
  if (dash >= 0) {
    const sp = out.indexOf("GitID");
    if (sp < 0 || dash < sp) throw new Error("Unable to parse the CRIU version");
    const m = /^GitID: v(\d+)\.(\d+)(?:\.(\d+))?$/.exec(out.slice(sp, dash));
    if (!m) throw new Error("Unable to parse the CRIU version");
    return m[3] === undefined
      ? Number(m[1]) * 10000 + (Number(m[2]) + 1) * 100
      : Number(m[1]) * 10000 + Number(m[2]) * 100 + Number(m[3]) + 1;
  }
  const m = /^Version: (\d+)\.(\d+)(?:\.(\d+))?\n/.exec(out);
  if (!m) throw new Error("Unable to parse the CRIU version");
  return Number(m[1]) * 10000 + Number(m[2]) * 100 + Number(m[3] ?? 0);
}
/** go-criu's GetCriuVersion() arithmetic on the same numbers (a GitID marks a development build: next minor). */
function goCriuVersion(major: number, minor: number, sublevel: number | undefined, gitid: string | undefined): number {
  let v = major * 10000 + minor * 100 + (sublevel ?? 0);
  if (gitid !== undefined) {
    v -= v % 100;
    v += 100;
  }
  return v;
}

describe("--version", () => {
  test("Version: 4.2 and a GitID line naming criu-bun; LXC, runc and go-criu accept it", () => {
    const r = criuBun(["--version"], { env });
    expect(r.code).toBe(0);
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(/^Version: 4\.2\nGitID: criu_bun \d+\.\d+\.\d+\n$/);
    expect(criuBun(["-V"], { env }).stdout).toBe(r.stdout);
    // LXC: string comparison against its minimum, and its cmp_version against 2.8 (--external veth)
    const lxc = lxcAccepts(r.stdout);
    expect(lxc).toEqual({ ok: true, version: "4.2" });
    expect(lxcCmpVersion(lxc.version!, "2.8")).toBe(1);
    expect(lxcCmpVersion(lxc.version!, "4.2")).toBe(0);
    expect(lxcAccepts(r.stdout, "4.3").ok).toBe(false);
    // runc's CLI parse: a release, 4.2 -> 40200, over runc's minimum (31500)
    expect(runcVersion(r.stdout)).toBe(40200);
    // the same parsers on CRIU's own output, to show they are the real logic
    expect(runcVersion("Version: 4.2\nGitID: v4.2-22-g2cf8f13ca\n")).toBe(40300);
    expect(runcVersion("Version: 3.15\n")).toBe(31500);
    // go-criu on the numbers criu-bun reports (4, 2, no sublevel) with and without a gitid
    const m = /^Version: (\d+)\.(\d+)\nGitID: (.*)\n$/.exec(r.stdout)!;
    expect(goCriuVersion(Number(m[1]), Number(m[2]), undefined, undefined)).toBe(40200);
    expect(goCriuVersion(Number(m[1]), Number(m[2]), undefined, m[3])).toBeGreaterThanOrEqual(31500);
  });

  test("--version wins over the command and other options, config files included", () => {
    const r = criuBun(["dump", "--version", "-t", "1"], { env });
    expect(r.code).toBe(0);
    expect(r.stdout).toStartWith("Version: 4.2\n");
  });
});
