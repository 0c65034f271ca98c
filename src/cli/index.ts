// cac wiring only: commands and criu's option spellings. Logic lives in the command modules.
import { cac, type CAC } from "cac";
import { normalizeArgv, type Opts } from "./options";
import { log, setLogFile, setLogLevel, CriuError } from "../log";
import { versionText } from "../version";

type Runner = (opts: Opts, args: string[]) => Promise<number>;

const COMMANDS: Record<string, { desc: string; load: () => Promise<Runner> }> = {
  check: { desc: "check that the kernel supports what criu-bun needs", load: async () => (await import("./check")).run },
  dump: { desc: "checkpoint a process tree (-t PID) into an images directory (-D DIR)", load: async () => (await import("./dump")).run },
  "pre-dump": { desc: "pre-dump memory of a process tree (iterative migration)", load: async () => (await import("./predump")).run },
  restore: { desc: "restore a process tree from an images directory (-D DIR)", load: async () => (await import("./restore")).run },
  show: { desc: "decode an image FILE to JSON, or summarize an images directory (--dir DIR)", load: async () => (await import("./show")).run },
  "page-server": { desc: "receive the pages of a dump run with --page-server (--port N, -D DIR)", load: async () => (await import("./pageserver")).run },
  swrk: { desc: "serve criu's RPC on the socket at fd N (how runc, crun and Podman call criu)", load: async () => (await import("./swrk")).run },
  "lazy-pages": { desc: "serve pages for a lazy restore (not supported yet)", load: async () => (await import("./unsupported")).run("lazy-pages") },
};

function defineOptions(cli: CAC) {
  cli
    .option("-t, --tree <pid>", "checkpoint the process tree rooted at PID")
    .option("-D, --images-dir <dir>", "directory for image files", { default: "." })
    .option("-W, --work-dir <dir>", "directory for logs and pidfiles (default: images dir)")
    .option("-o, --log-file <file>", "log to FILE (relative to the work dir)")
    .option("--verbosity <n>", "log level 0..4 (also -v, -vv, -vN)", { default: 2 })
    .option("-R, --leave-running", "leave the tasks running after dump")
    .option("-s, --leave-stopped", "leave the tasks stopped after dump or restore")
    .option("-d, --restore-detached", "detach from the restored tree")
    .option("-j, --shell-job", "allow dumping and restoring a shell job (controlling tty)")
    .option("--tcp-established", "checkpoint established TCP connections")
    .option("--tcp-close", "restore established TCP connections closed")
    .option("--pidfile <file>", "write the root task's PID to FILE")
    .option("--manage-cgroups [mode]", "dump or restore cgroups")
    .option("--display-stats", "print dump/restore statistics")
    .option("--timeout <seconds>", "give up on freezing the tree after N seconds")
    .option("--no-default-config", "do not read default configuration files")
    .option("--compress", "compress pages with LZ4 (criu-bun extension)")
    .option("--feature <name>", "check: test one feature, exit 0 if present")
    .option("--all", "check: run and list every probe")
    .option("--dir <dir>", "show: summarize an images directory")
    .option("--ext-unix-sk", "allow external unix sockets")
    .option("--file-locks", "handle file locks")
    .option("--link-remap", "allow link remap of deleted files")
    .option("--prev-images-dir <dir>", "images of a previous (pre-)dump")
    .option("--ghost-limit <size>", "largest deleted file saved with the dump (bytes, or with K/M/G)")
    .option("--track-mem", "accepted for criu compatibility (pages are compared with --prev-images-dir)")
    .option("--page-server", "dump: send pages to the page server at --address/--port")
    .option("--address <addr>", "page server address (default 0.0.0.0 to listen, required to send)")
    .option("--port <port>", "page server port");
}

export async function main(argv: string[]): Promise<number> {
  const cli = cac("criu-bun");
  defineOptions(cli);
  let chosen: { name: string; args: string[]; opts: Opts } | undefined;
  for (const [name, c] of Object.entries(COMMANDS)) {
    cli.command(`${name} [...args]`, c.desc).action((args: string[], opts: Opts) => {
      chosen = { name, args, opts };
    });
  }
  cli.help();
  if (argv.includes("--version") || argv.includes("-V")) { process.stdout.write(versionText()); return 0; }
  let parsed;
  try {
    parsed = cli.parse(["bun", "criu-bun", ...normalizeArgv(argv)], { run: false });
    if (parsed.options.help || parsed.options.version) return 0;
    if (!cli.matchedCommand) {
      const what = parsed.args[0];
      if (what === undefined) { cli.outputHelp(); return 1; }
      throw new CriuError("cli", `unknown command '${what}' (try --help)`);
    }
    await cli.runMatchedCommand();
  } catch (e: any) {
    let m = String(e.message);
    const u = /^Unknown option `(.+)`$/.exec(m);
    if (u) {
      // cac reports the camelCased name: show the option as the user typed it
      const camel = (x: string) => x.replace(/^-+/, "").split("=")[0].replace(/-([a-z])/g, (_, c) => c.toUpperCase());
      const typed = argv.find((a) => a.startsWith("-") && camel(a) === camel(u[1]));
      m = `unknown option '${typed?.split("=")[0] ?? u[1]}'`;
    }
    log.error("cli", e.name === "CACError" ? `${m} (try --help)` : m);
    return 1;
  }
  if (!chosen) return 1;
  const opts = chosen.opts;
  opts.verbosity = Number(opts.verbosity);
  setLogLevel(opts.verbosity);
  if (opts.tree !== undefined) opts.tree = Number(opts.tree);
  try {
    if (opts.logFile) {
      const { join, isAbsolute } = await import("node:path");
      const base = opts.workDir ?? opts.imagesDir;
      setLogFile(isAbsolute(opts.logFile) ? opts.logFile : join(base, opts.logFile));
    }
    const run = await COMMANDS[chosen.name].load();
    return await run(opts, chosen.args);
  } catch (e: any) {
    const where = e instanceof CriuError ? e.where : chosen.name;
    log.error(where, e?.message ?? String(e));
    if (process.env.CRIU_BUN_DEBUG) console.error(e?.stack);
    return 1;
  }
}
