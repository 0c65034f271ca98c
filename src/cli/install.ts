// criu-bun install --as-criu [--prefix DIR]: make criu-bun the `criu` that runc (>= 1.2), Podman's
// go-criu and crun's libcriu find in PATH: a symlink DIR/criu (default /usr/local/sbin) to this
// executable. Started as `criu`, criu-bun answers --version as criu does (src/version.ts).
import { lstatSync, readlinkSync, symlinkSync, renameSync, unlinkSync } from "../sys/fs";
import { join, resolve } from "../sys/path";
import { CriuError, log } from "../log";
import type { Opts } from "./options";
import { errnoText, errorCode } from "../sys/errno";

export async function run(opts: Opts, args: string[]): Promise<number> {
  if (!opts.asCriu || args.length)
    throw new CriuError(
      "install",
      "usage: install --as-criu [--prefix DIR] (a symlink DIR/criu to criu-bun, DIR default /usr/local/sbin)"
    );
  const self = process.execPath;
  if (/\/bun$/.test(self))
    throw new CriuError("install", "install needs the built executable (npm run build), not bun running the sources");
  const dir = resolve(String(opts.prefix ?? "/usr/local/sbin"));
  const link = join(dir, "criu");
  let existing: string | undefined;
  try {
    const st = lstatSync(link);
    if (!st.isSymbolicLink())
      throw new CriuError("install", `${link} exists and is not a symlink (another criu?); remove it first`);
    existing = readlinkSync(link);
  } catch (e) {
    if (e instanceof CriuError) throw e;
    if (errorCode(e) !== "ENOENT") throw new CriuError("install", `${link}: ${errnoText(e)}`);
  }
  if (existing === self) {
    process.stdout.write(`${link} -> ${self} (already)\n`);
    return 0;
  }
  if (existing !== undefined && !/criu-bun$/.test(existing))
    throw new CriuError("install", `${link} already points to ${existing}; remove it first`);
  // a fresh name in the same directory, renamed over: no moment without a criu, no following links
  const tmp = join(dir, `.criu.criu-bun-${process.pid}-${Date.now()}`);
  try {
    symlinkSync(self, tmp);
    renameSync(tmp, link);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {}
    throw new CriuError("install", `cannot create ${link}: ${errnoText(e)}`);
  }
  log.info(`installed ${link} -> ${self}`);
  process.stdout.write(`${link} -> ${self}\n`);
  return 0;
}
