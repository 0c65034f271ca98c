import { CriuError } from "../log";
import type { Opts } from "./options";

/** criu swrk <fd>: serve criu's RPC on the SOCK_SEQPACKET socket at fd until the caller closes it. */
export async function run(_opts: Opts, args: string[]): Promise<number> {
  if (args.length !== 1 || !/^\d+$/.test(args[0]))
    throw new CriuError("swrk", "usage: swrk <fd> (the socket's fd number)");
  const { serve } = await import("../rpc/swrk");
  return serve(Number(args[0]));
}
