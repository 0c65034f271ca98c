import { CriuError } from "../log";
import type { Opts } from "./options";

export async function run(_opts: Opts, _args: string[]): Promise<number> {
  throw new CriuError("predump", "not implemented yet");
}
