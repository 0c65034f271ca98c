// criu-bun's command line, as criu's: config files and argv through one getopt_long over CRIU
// 4.2's option table (criu-options.ts, getopt.ts, config.ts, parse.ts), then the command.
// Logic lives in the command modules; this file dispatches, refuses what is not supported, and
// sets up logging.
import { parseCli, type ParsedCli } from "./parse";
import { UsageError, atoi } from "./getopt";
import { checkSupport } from "./support";
import { CRIU_OPTIONS, CRIU_BUN_OPTIONS, optionByName, optionByShort, type Command } from "./criu-options";
import type { Opts } from "./options";
import { versionText } from "../version";
import { jitForWork } from "../jit";

type Runner = (opts: Opts, args: string[]) => Promise<number>;

interface CommandDef {
  desc: string;
  load: () => Promise<Runner>;
  /** what may follow the command word (criu: nothing, except cpuinfo's dump|check) */
  args?: "none" | "any";
}

/** commands that serve or move memory for as long as they run */
const LONG_RUNNING = new Set(["page-server", "lazy-pages", "service", "swrk", "migrate"]);
/** commands whose memory the kernel frees after criu-bun's parent has its exit status
 *  (sys/sentinel.ts keepMemoryPastExit): they load the syscall stub anyway, and a user waits on
 *  their exit */
const KEEP_MEMORY_PAST_EXIT = new Set(["dump", "pre-dump", "restore"]);

const unsupported = (name: string) => async () => (await import("./unsupported")).run(name);

const COMMANDS: Record<string, CommandDef> = {
  dump: {
    desc: "checkpoint a process tree (-t PID) into an images directory (-D DIR)",
    load: async () => (await import("./dump")).run,
  },
  "pre-dump": {
    desc: "pre-dump the memory of a process tree that keeps running",
    load: async () => (await import("./predump")).run,
  },
  restore: {
    desc: "restore a process tree from an images directory (-D DIR)",
    load: async () => (await import("./restore")).run,
  },
  check: {
    desc: "check that the kernel supports what criu-bun needs",
    load: async () => (await import("./check")).run,
  },
  "page-server": {
    desc: "receive the pages of a dump run with --page-server (--port N, -D DIR)",
    load: async () => (await import("./pageserver")).run,
  },
  show: {
    desc: "crit in criu-bun: decode|encode|info [-i IN] [-o OUT] [--pretty] [--nopl], x DIR ps|fds|mems|rss",
    load: async () => (await import("./show")).run,
    args: "any",
  },
  service: {
    desc: "serve criu's RPC on a unix socket (--address PATH, default ./criu_service.socket), a worker per connection",
    load: async () => (await import("./service")).run,
  },
  swrk: {
    desc: "serve criu's RPC on the socket at fd N (how runc, crun and Podman call criu)",
    load: async () => (await import("./swrk")).run,
    args: "any",
  },
  install: {
    desc: "install --as-criu [--prefix DIR]: make criu-bun the criu in PATH (a symlink DIR/criu)",
    load: async () => (await import("./install")).run,
  },
  migrate: {
    desc: "live migration: -t PID --to HOST:PORT on the source, --listen PORT on the destination",
    load: async () => (await import("./migrate")).run,
  },
  "lazy-pages": {
    desc: "serve a restore --lazy-pages the pages of a dump --lazy-pages (--page-server --address A --port P -D DIR)",
    load: async () => (await import("./lazypages")).run,
  },
  dedup: {
    desc: "punch the pages a dump stores itself out of its parent images (-D DIR)",
    load: async () => (await import("./dedup")).run,
  },
  cpuinfo: { desc: "cpuinfo dump|check (not supported yet)", load: unsupported("cpuinfo"), args: "any" },
};

function usage(): string {
  const lines = [
    "Usage:",
    "  criu-bun dump|pre-dump -t PID [<options>]",
    "  criu-bun restore [<options>]",
    "  criu-bun check [--feature FEAT]",
    "  criu-bun page-server",
    "  criu-bun migrate -t PID --to HOST:PORT [--tcp-established] | migrate --listen PORT [--address A]",
    "  criu-bun show decode|encode|info [-i IN] [-o OUT] [--pretty] [--nopl] | show x DIR ps|fds|mems|rss",
    "",
    "Commands:",
    ...Object.entries(COMMANDS).map(([n, c]) => `  ${n.padEnd(14)} ${c.desc}`),
    "",
    "Options (CRIU 4.2's; most true/false options also have a --no- form):",
  ];
  for (const o of [...CRIU_OPTIONS, ...CRIU_BUN_OPTIONS]) {
    const arg = o.arg === "required" ? " ARG" : o.arg === "optional" ? "[=ARG]" : "";
    const flag = `${o.short ? `-${o.short}|` : "   "}--${o.name}${arg}`;
    const tag = o.support === "no" ? " [not supported yet]" : "";
    lines.push(`  ${flag.padEnd(30)} ${o.meaning}${tag}`);
  }
  lines.push(
    "",
    "Config files: /etc/criu/default.conf, ~/.criu/default.conf, $CRIU_CONFIG_FILE, --config FILE;",
    "one option per line without dashes, optionally with one value; '#' comments."
  );
  return lines.join("\n") + "\n";
}

/** Close the fds named by --close, as criu does before anything else. */
async function closeFds(list: unknown) {
  if (!Array.isArray(list)) return;
  const { closeSync } = await import("../sys/fs");
  for (const v of list) {
    const fd = atoi(String(v));
    try {
      closeSync(fd);
    } catch {}
  }
}

/**
 * Where the command word `show` is, if it is the command: everything after it is show's own
 * (crit's -i/-o/--pretty/--nopl), not criu's options. -1 if the command is another one.
 */
function showIndex(argv: string[]): number {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--") return -1;
    if (a.startsWith("--")) {
      const o = optionByName(a.slice(2).split("=")[0]);
      if (o && o.arg === "required" && !a.includes("=")) i++;
    } else if (a.startsWith("-") && a.length > 1) {
      for (let k = 1; k < a.length; k++) {
        const o = optionByShort(a[k]);
        if (o && o.arg !== "none") {
          if (k === a.length - 1 && o.arg === "required") i++;
          break;
        }
      }
    } else return a === "show" ? i : -1;
  }
  return -1;
}

export async function main(argv: string[]): Promise<number> {
  let p: ParsedCli;
  let showArgs: string[] | undefined;
  const si = showIndex(argv);
  if (si >= 0) {
    showArgs = argv.slice(si + 1);
    argv = argv.slice(0, si + 1);
  }
  try {
    p = parseCli(argv);
    if (showArgs) p.args = showArgs;
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`Error (cli): ${e.message}\nTry -h|--help for more info\n`);
    return 1;
  }
  if (p.version) {
    process.stdout.write(versionText());
    return 0;
  }
  if (p.help) {
    process.stdout.write(usage());
    return 0;
  }

  const { log, setLogFile, setLogLevel, asCriuError, errorMessage } = await import("../log");
  const fail = (where: string, msg: string) => {
    log.error(where, msg);
    return 1;
  };
  const opts = p.opts;
  setLogLevel(opts.verbosity);
  if (!p.command) {
    process.stderr.write("Error (cli): command is required\nTry -h|--help for more info\n");
    return 1;
  }
  const name = p.command;
  if (name === "exec") return fail("cli", 'the "exec" action is deprecated by the Compel library');
  const def = COMMANDS[name];
  if (!def) {
    process.stderr.write(`Error (cli): unknown command '${name}'\nTry -h|--help for more info\n`);
    return 1;
  }
  await closeFds(opts.close);
  try {
    if (opts.logFile) {
      const { join, isAbsolute } = await import("../sys/path");
      const base = opts.workDir ?? opts.imagesDir;
      setLogFile(opts.logFile === "-" || isAbsolute(opts.logFile) ? opts.logFile : join(base, opts.logFile));
    }
  } catch (e) {
    return fail(name, `cannot open log file: ${errorMessage(e)}`);
  }
  const { versionLine } = await import("../version");
  log.info(versionLine());
  const { warmed } = await import("../sys/warm");
  if (warmed)
    log.debug(
      warmed.thread
        ? `start: ${warmed.pages} pages of the heap arena populated ahead for '${warmed.command}' by thread ${warmed.thread} (${warmed.runs} runs, started in ${warmed.ms.toFixed(2)} ms)`
        : `start: ${warmed.pages} pages of the heap arena populated ahead for '${warmed.command}' (${warmed.runs} runs, ${warmed.ms.toFixed(2)} ms)${warmed.error ? `; stopped: ${warmed.error}` : ""}`
    );
  for (const c of p.configs) log.debug(`Parsed config file ${c}`);
  let args = p.args;
  if (opts.execCmd) {
    if (!args.length) return fail("cli", "--exec-cmd requires a command");
    if (name !== "restore") return fail("cli", "--exec-cmd is available for the restore command only");
    if (opts.restoreDetached) return fail("cli", "--restore-detached and --exec-cmd cannot be used together");
  } else if (args.length && def.args !== "any") {
    return fail("cli", `excessive parameter${args.length > 1 ? "s" : ""} for command ${name}: ${args.join(" ")}`);
  }
  if (opts.restoreSibling && !opts.restoreDetached && name === "restore")
    return fail("cli", "--restore-sibling only makes sense with --restore-detached");
  const verdict = checkSupport(name as Command, p.given);
  for (const n of verdict.notes) log.info(n);
  if (verdict.refused) return fail(name, verdict.refused);
  if (name === "restore" && opts.tree) log.warn("Using -t with criu restore is obsoleted");
  // the commands that serve (their loops run long) tier up as long-running work (src/jit.ts)
  if (LONG_RUNNING.has(name)) jitForWork();
  let code: number;
  try {
    const run = await def.load();
    code = await run(opts, args);
  } catch (e) {
    const err = asCriuError(e, name);
    log.error(err.where, err.message);
    if (process.env.CRIU_BUN_DEBUG) console.error(e instanceof Error ? e.stack : undefined);
    code = 1;
  }
  if (KEEP_MEMORY_PAST_EXIT.has(name)) {
    try {
      const { pid, ms } = (await import("../sys/sentinel")).keepMemoryPastExit();
      log.debug(
        `exit: process ${pid} holds criu-bun's memory (made and ready in ${ms.toFixed(2)} ms), freed once criu-bun has exited`
      );
    } catch (e) {
      log.debug(`exit: no process to hold criu-bun's memory (${errorMessage(e)}): freed before the exit`);
    }
  }
  return code;
}
