import { CriuError } from "../log";
import type { Opts } from "./options";

export function run(name: string) {
  return async (_o: Opts, _a: string[]): Promise<number> => {
    throw new CriuError(name, `'${name}' is not supported by this version of criu-bun`);
  };
}
