import { CriuError, log } from "../log";
import type { Opts } from "./options";
import { servePages } from "../net/pageserver";
import { existsSync, statSync } from "node:fs";

/** criu page-server: receive one dump's pages into -D DIR, then exit. */
export async function run(opts: Opts, _args: string[]): Promise<number> {
  const port = Number(opts.port);
  if (!(port > 0 && port < 65536)) throw new CriuError("page-server", "give the port to listen on with --port");
  const dir = opts.imagesDir;
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new CriuError("page-server", `images directory '${dir}' does not exist`);
  if (opts.restoreDetached) throw new CriuError("page-server", "--daemon is not supported; run it in the background from the shell");
  const pages = servePages(dir, String(opts.address ?? "0.0.0.0"), port);
  log.info(`Page server finished: ${pages} pages written to ${dir}`);
  return 0;
}
