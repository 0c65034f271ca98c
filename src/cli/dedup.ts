import { existsSync, statSync } from "../sys/fs";
import { CriuError } from "../log";
import type { Opts } from "./options";
import { dedupChain } from "../codec/dedup";

/**
 * criu dedup -D DIR: the pages DIR's dump stores itself are punched out of its parent images (the
 * chain under DIR/parent), which a restore of DIR never reads. Those parent images are then only
 * a part of DIR's: a restore of them alone is refused.
 */
export async function run(opts: Opts, _args: string[]): Promise<number> {
  const dir = opts.imagesDir;
  if (!existsSync(dir) || !statSync(dir).isDirectory())
    throw new CriuError("dedup", `images directory '${dir}' does not exist`);
  dedupChain(dir);
  return 0;
}
