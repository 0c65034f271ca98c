// criu's option processing: config files in criu's order, then the command line, through one
// getopt_long over the table; later settings override earlier ones (repeatable options add up);
// values checked as criu checks them at parse time. Pure: no side effects besides reading the
// config files.
import { getoptLong, atoi, UsageError, type Given } from "./getopt";
import { readConfig, GLOBAL_CONFIG, USER_CONFIG, type ConfigLine } from "./config";
import { CGROUP_MODES, NETWORK_LOCK_METHODS, type CriuOption } from "./criu-options";
import type { Opts } from "./options";

export interface ParsedCli {
  /** the command word (dump, restore, ...), if any */
  command?: string;
  /** the arguments after the command word (show's FILE, cpuinfo's dump|check, --exec-cmd's command) */
  args: string[];
  opts: Opts;
  /** every option set, in the order applied (config files first) */
  given: Given[];
  /** config files read, in order */
  configs: string[];
  help: boolean;
  version: boolean;
}

const DEFAULT_LOGLEVEL = 2;

function badArg(g: Given): UsageError {
  return new UsageError(`invalid argument for ${g.spelled}: ${g.value}`);
}

function inWhere(g: Given, msg: string): UsageError {
  return new UsageError(g.where ? `${g.where}: ${msg}` : msg);
}

/** criu's --cpu-cap syntax: comma-separated fpu, all, none, cpu, ins, each may be negated by ^ */
function checkCpuCap(v: string): boolean {
  let s = v;
  while (s.length) {
    if (s[0] === "^" || s[0] === ",") {
      s = s.slice(1);
      continue;
    }
    const m = /^(fpu|all|none|cpu|ins)/.exec(s);
    if (!m) return false;
    s = s.slice(m[1].length);
  }
  return true;
}

/** Check a value as criu does when it parses the option. */
function validate(g: Given) {
  const v = g.value;
  if (typeof v !== "string") return;
  const n = g.opt.name;
  if (g.opt.values && !g.opt.values.includes(v)) {
    const msg: Record<string, string> = {
      "manage-cgroups": `Unknown cgroups mode \`${v}' selected (one of ${CGROUP_MODES.join(", ")})`,
      "network-lock": `Invalid value for --network-lock: ${v} (one of ${NETWORK_LOCK_METHODS.join(", ")})`,
      "pre-dump-mode": `Unable to parse value of --pre-dump-mode: ${v} (splice or read)`,
      "file-validation": `Unknown file validation method \`${v}' selected (filesize or buildid)`,
      "empty-ns": `Unsupported empty namespace: ${v} (only net)`,
    };
    throw inWhere(g, msg[n] ?? `invalid argument for ${g.spelled}: ${v}`);
  }
  switch (n) {
    case "tree":
      if (atoi(v) <= 0) throw inWhere(g, badArg(g).message);
      break;
    case "port":
      if (atoi(v) === 0) throw inWhere(g, badArg(g).message);
      break;
    case "status-fd":
      if (!/^\s*[+-]?\d/.test(v)) throw inWhere(g, `Unable to parse a value of --status-fd: ${v}`);
      break;
    case "ps-socket":
    case "close":
    case "timeout":
      break;
    case "cpu-cap":
      if (!checkCpuCap(v)) throw inWhere(g, `Unknown FPU mode \`${v}' selected`);
      break;
    case "veth-pair":
      if (!v.includes("=")) throw inWhere(g, badArg(g).message);
      break;
    case "join-ns":
      if (!v.includes(":")) throw inWhere(g, badArg(g).message);
      break;
    case "ext-mount-map":
      if (v !== "auto" && !v.includes(":")) throw inWhere(g, badArg(g).message);
      break;
    case "ext-unix-sk":
      if (!/^\d+(,\d+)*$/.test(v)) throw inWhere(g, `Failed to parse unix socket inode from optarg: ${v}`);
      break;
  }
}

/**
 * Apply options in order onto opts. Verbosity counts as criu's does (each bare -v adds one,
 * -vvv adds three, -vN sets N); -s and -R share criu's final_state (the last one wins).
 */
function apply(opts: Opts, g: Given) {
  const o: CriuOption = g.opt;
  const k = o.key;
  if (o.name === "verbosity") {
    const v = g.value;
    if (v === undefined) opts.verbosity += 1;
    else if (typeof v === "string" && v.startsWith("v")) opts.verbosity += v.length + 1;
    else opts.verbosity = atoi(String(v));
    return;
  }
  if (o.name === "leave-stopped") {
    opts.leaveStopped = true;
    opts.leaveRunning = false;
    return;
  }
  if (o.name === "leave-running") {
    opts.leaveRunning = true;
    opts.leaveStopped = false;
    return;
  }
  if (o.repeat) {
    const list = (opts[k] as (string | boolean)[] | undefined) ?? [];
    list.push(g.value === undefined ? true : g.value);
    opts[k] = list;
    return;
  }
  if (o.arg === "optional" && g.value === undefined) {
    opts[k] = true;
    return;
  }
  opts[k] = g.value;
}

function defaultOpts(): Opts {
  return { imagesDir: ".", verbosity: DEFAULT_LOGLEVEL };
}

function fromConfig(lines: ConfigLine[], file: string): Given[] {
  const out: Given[] = [];
  for (const l of lines) {
    const where = `${file}:${l.line}`;
    const r = getoptLong(l.argv, `${where}: `, () => where);
    // criu takes the value of an optional-argument option only as NAME=VALUE; in a config file
    // "manage-cgroups full" can only mean the value, so criu-bun takes it
    if (
      r.positional.length === 1 &&
      r.given.length === 1 &&
      r.given[0].opt.arg === "optional" &&
      r.given[0].value === undefined
    ) {
      r.given[0].value = r.positional[0];
      r.positional.length = 0;
    }
    if (r.positional.length) {
      const g = r.given[0];
      throw new UsageError(
        `${where}: ${g ? `${g.spelled.slice(2)} takes no value` : "not an option"} ('${r.positional.join(" ")}')`
      );
    }
    if (r.given.some((g) => g.opt.name === "config" || g.opt.name === "no-default-config"))
      throw new UsageError(`${where}: ${l.argv[0].slice(2)} has no effect inside a config file`);
    out.push(...r.given);
  }
  return out;
}

/**
 * Parse the command line (argv without the program name) with criu's config files before it.
 * `rpcConfig` is the RPC request's config_file, read last (it overrides the request's options in criu).
 */
export function parseCli(
  argv: readonly string[],
  env: Record<string, string | undefined> = process.env,
  rpcConfig?: string
): ParsedCli {
  // criu's pre-parse: --help anywhere wins; --config/--no-default-config decide which files to read
  let noDefault = false;
  let cfgFile: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--") break;
    if (a === "--help" || a === "-h")
      return { args: [], opts: defaultOpts(), given: [], configs: [], help: true, version: false };
    if (a === "--no-default-config") noDefault = true;
    else if (a === "--config") {
      cfgFile = argv[i + 1];
      noDefault = true;
    } else if (a.startsWith("--config=")) {
      cfgFile = a.slice("--config=".length);
      noDefault = true;
    }
  }
  const given: Given[] = [];
  const configs: string[] = [];
  const file = (path: string, mustExist: boolean) => {
    const lines = readConfig(path);
    if (!lines) {
      if (mustExist) throw new UsageError(`config file ${path} does not exist`);
      return;
    }
    configs.push(path);
    given.push(...fromConfig(lines, path));
  };
  if (!noDefault) {
    file(GLOBAL_CONFIG, false);
    if (env.HOME) file(`${env.HOME}/${USER_CONFIG}`, false);
  }
  if (env.CRIU_CONFIG_FILE) file(env.CRIU_CONFIG_FILE, true);
  if (cfgFile !== undefined) file(cfgFile, true);
  const cmd = getoptLong(argv);
  given.push(...cmd.given);
  if (rpcConfig) file(rpcConfig, true);

  const opts = defaultOpts();
  let help = false,
    version = false;
  for (const g of given) {
    if (g.opt.name === "help") {
      help = true;
      continue;
    }
    if (g.opt.name === "version") {
      version = true;
      break;
    } // criu prints it as soon as it meets -V
    if (g.opt.name === "ms") throw inWhere(g, '--ms is deprecated; see "Check options" of criu-bun --help');
    validate(g);
    apply(opts, g);
  }
  if (typeof opts.tree === "string") opts.tree = atoi(opts.tree);
  const [command, ...args] = cmd.positional;
  return { command, args, opts, given, configs, help, version };
}
