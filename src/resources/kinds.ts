// Every fd kind criu-bun knows, in the order they are tried.
import type { FdKind } from "./fdkind";
import { regKind } from "./reg";
import { pipeKind } from "./pipe";

export const FD_KINDS: FdKind[] = [pipeKind, regKind];
export function kindByType(type: number): FdKind | undefined {
  return FD_KINDS.find((k) => k.type === type);
}
