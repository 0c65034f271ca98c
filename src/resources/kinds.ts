// Every fd kind criu-bun knows, in the order they are tried.
import type { SomeFdKind } from "./fdkind";
import { regKind } from "./reg";
import { pipeKind } from "./pipe";
import { ttyKind } from "./tty";
import { fifoKind } from "./fifo";
import { eventfdKind } from "./eventfd";
import { timerfdKind } from "./timerfd";
import { signalfdKind } from "./signalfd";
import { epollKind } from "./epoll";
import { inotifyKind } from "./inotify";
import { memfdKind } from "./memfd";
import { unixKind } from "./unix";
import { inetKind } from "./inet";
import { mqueueKind } from "./mqueue";
import { pidfdKind } from "./pidfd";

export const FD_KINDS: SomeFdKind[] = [
  ttyKind,
  pipeKind,
  fifoKind,
  eventfdKind,
  timerfdKind,
  signalfdKind,
  epollKind,
  inotifyKind,
  memfdKind,
  inetKind,
  unixKind,
  mqueueKind,
  pidfdKind,
  regKind,
];
export function kindByType(type: number): SomeFdKind | undefined {
  return FD_KINDS.find((k) => k.type === type);
}
