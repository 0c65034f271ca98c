// criu-bun migrate (criu-bun's own command): live migration, src/migrate/migrate.ts.
//   destination: criu-bun migrate --listen PORT [--address A] [-D DIR] [--no-post-copy]
//   source:      criu-bun migrate -t PID --to HOST:PORT [-D DIR] [--tcp-established]
import { existsSync, statSync } from "../sys/fs";
import { CriuError } from "../log";
import type { Opts } from "./options";
import { atoi } from "./getopt";
import { migrateIn, migrateOut } from "../migrate/migrate";
import { scriptHooks } from "./scripts";
import { E, errnoText } from "../sys/errno";

function port(v: string, what: string): number {
  const p = /^\d+$/.test(v) ? Number(v) : NaN;
  if (!(p > 0 && p < 65536)) throw new CriuError("migrate", `${what}: '${v}' is not a TCP port`);
  return p;
}

export async function run(opts: Opts, _args: string[]): Promise<number> {
  const dir = opts.imagesDir;
  if (!existsSync(dir) || !statSync(dir).isDirectory())
    throw new CriuError("migrate", `directory '${dir}' (-D) does not exist`);
  const timeoutSec = opts.timeout !== undefined ? atoi(String(opts.timeout)) : undefined;
  if (timeoutSec !== undefined && !(timeoutSec > 0))
    throw new CriuError("migrate", `--timeout ${opts.timeout}: give seconds`);
  if (opts.listen !== undefined && opts.to !== undefined)
    throw new CriuError("migrate", "give either --listen PORT (destination) or --to HOST:PORT (source), not both");
  if (opts.listen !== undefined) {
    if (opts.tree !== undefined)
      throw new CriuError("migrate", "-t is for the source (with --to); the destination only listens");
    migrateIn({
      address: String(opts.address ?? "0.0.0.0"),
      port: port(String(opts.listen), "--listen"),
      dir,
      timeoutSec,
      restore: { trustImages: !!opts.trustImages, hooks: scriptHooks(opts), timeoutSec },
      postCopy: opts.postCopy !== false,
    });
    return 0;
  }
  if (opts.to === undefined)
    throw new CriuError("migrate", "give --to HOST:PORT and -t PID on the source, or --listen PORT on the destination");
  if (opts.tree === undefined || Number.isNaN(opts.tree))
    throw new CriuError("migrate", "no process to migrate: give -t PID");
  if (!existsSync(`/proc/${opts.tree}`))
    throw new CriuError("migrate", `process ${opts.tree} does not exist: ${errnoText(E.ESRCH)}`);
  const m = /^(.+):(\d+)$/.exec(String(opts.to));
  if (!m) throw new CriuError("migrate", `--to ${opts.to}: give HOST:PORT (an IPv4 address and a port)`);
  migrateOut({
    pid: opts.tree,
    host: m[1],
    port: port(m[2], "--to"),
    dir,
    tcpEstablished: !!opts.tcpEstablished,
    timeoutSec,
    postCopy: opts.postCopy !== false,
  });
  return 0;
}
