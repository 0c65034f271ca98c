// inherit_fd (RPC) and --inherit-fd fd[N]:KEY (command line): a file of the dumped tree is not
// recreated but replaced by an fd criu-bun was given, one more fd of the same open file
// description. runc passes "pipe:[ino]" for a container's stdio pipes, whose other ends were its
// own: the restored container writes into the pipes of the runc that restores it. Keys criu-bun
// honours: pipe:[ino] (src/resources/pipe.ts) and an external network namespace's key (dump
// --external net[INODE]:KEY; restore/task.ts joins it). The fd is checked here, before anything is made.
import { fstatSync } from "../sys/fs";
import { CriuError } from "../log";

export function inheritFds(list: { key: string; fd: number }[]): Map<string, number> | undefined {
  if (!list.length) return undefined;
  const out = new Map<string, number>();
  for (const { key, fd } of list) {
    // pipe:[ino], or the key of an external namespace (runc: extRootNetNS, an fd of the netns to join)
    if (!/^pipe:\[\d+\]$/.test(key) && !/^[A-Za-z][\w.-]*$/.test(key)) {
      throw new CriuError(
        "restore",
        `inherit_fd '${key}': only pipes (pipe:[ino]) and external namespaces (their key) can be inherited by criu-bun yet`
      );
    }
    if (!Number.isInteger(fd) || fd < 0) throw new CriuError("restore", `inherit_fd '${key}': bad fd ${fd}`);
    try {
      fstatSync(fd);
    } catch {
      throw new CriuError("restore", `inherit_fd '${key}': fd ${fd} is not open in criu-bun`);
    }
    // runc names the pipe behind stdout and stderr twice (fd 1 and 2): the first one counts, as in criu
    if (!out.has(key)) out.set(key, fd);
  }
  return out;
}

/** --inherit-fd fd[N]:KEY, as criu's command line spells it */
export function parseInheritFdArgs(args: unknown): Map<string, number> | undefined {
  const list = (Array.isArray(args) ? args : args === undefined ? [] : [args]).map(String);
  return inheritFds(
    list.map((a) => {
      const m = /^fd\[(\d+)\]:(.+)$/.exec(a);
      if (!m) throw new CriuError("restore", `--inherit-fd '${a}': expected fd[N]:KEY`);
      return { key: m[2], fd: Number(m[1]) };
    })
  );
}
