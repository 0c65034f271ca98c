// Logs worth reading: at -v4 a dump says what it saved for every fd and every VMA, and a restore
// says what it created for each and which syscalls it injected (as CRIU's logs do).
import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync, readFileSync, readdirSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { buildWorkloads, cleanup, startWorkload, trigger, waitResult, waitUntil } from "./harness";
import { dump, restore, imagesDir, cleanupImages } from "./engine-helpers";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
afterAll(() => {
  cleanup();
  cleanupImages();
});

test("a -v4 dump log has a line per fd and per VMA; the restore log one per fd, VMA and injected syscall", async () => {
  const w = await startWorkload("manyfds.py");
  const fds = readdirSync(`/proc/${w.pid}/fd`).map(Number);
  const targets = new Map(fds.map((fd) => [fd, readlinkSync(`/proc/${w.pid}/fd/${fd}`)]));
  // [vvar_vclock] is saved as part of [vvar] (one VMA, as CRIU writes it): [vvar] is matched by its start
  const lines = readFileSync(`/proc/${w.pid}/maps`, "latin1")
    .trim()
    .split("\n")
    .filter((l) => !l.endsWith("[vsyscall]") && !l.endsWith("[vvar_vclock]"));
  const maps = lines.map((l) =>
    l
      .split(" ")[0]
      .split("-")
      .map((h) => BigInt(`0x${h}`))
  );
  const vvar = new Set(lines.filter((l) => l.endsWith("[vvar]")).map((l) => BigInt(`0x${l.split("-")[0]}`)));
  expect(readdirSync(`/proc/${w.pid}/task`).length).toBe(2);
  const dir = imagesDir("logs");
  dump(w.pid, dir); // -v4 -o dump.log
  const dlog = readFileSync(join(dir, "dump.log"), "utf8");
  for (const [fd, target] of targets) {
    expect({
      fd,
      line: new RegExp(`process ${w.pid} fd ${fd}: .*'${target.replace(/[[\]]/g, "\\$&")}'.* file id \\d+`).test(dlog),
    }).toEqual({ fd, line: true });
  }
  // every VMA, by its range (the kernel may merge or split none between reading maps and the dump: the tree is idle)
  for (const [s, e] of maps) {
    const at = `process ${w.pid}: vma 0x${s.toString(16)}-${vvar.has(s) ? "" : `0x${e.toString(16)} `}`;
    expect({ vma: s.toString(16), line: dlog.includes(at) }).toEqual({ vma: s.toString(16), line: true });
  }
  const r = await restore(dir, w.pid);
  const rlog = readFileSync(join(dir, "restore.log"), "utf8");
  for (const fd of fds)
    expect({
      fd,
      line: new RegExp(`process ${w.pid} fd ${fd}: file id \\d+ (\\([\\w ]+\\) created|taken from)`).test(rlog),
    }).toEqual({ fd, line: true });
  expect(rlog).toMatch(new RegExp(`process ${w.pid}: mapped vma 0x`));
  expect(rlog).toMatch(/thread \d+: injected (mmap|dup3|close)\(/);
  trigger(w);
  const res = await waitResult(w, 15000);
  expect(res.text).toStartWith("PASS");
  expect(await r.proc.exited).toBe(0);
});

test("dump and restore leave their memory to a process the -v4 log names, which frees it and is gone once they have exited", async () => {
  const w = await startWorkload("counter");
  const dir = imagesDir("keeper");
  dump(w.pid, dir);
  const holder = (log: string) => {
    const m =
      /exit: process (\d+) holds criu-bun's memory \(made and ready in [\d.]+ ms\), freed once criu-bun has exited\n$/.exec(
        log
      );
    expect(m).not.toBeNull();
    return Number(m![1]);
  };
  const d = holder(readFileSync(join(dir, "dump.log"), "utf8"));
  expect(d).not.toBe(w.pid);
  await waitUntil(`the dump's memory holder ${d} to be gone`, () => !existsSync(`/proc/${d}`));
  const r = await restore(dir, w.pid, ["-d"]);
  expect(await r.proc.exited).toBe(0);
  const h = holder(readFileSync(join(dir, "restore.log"), "utf8"));
  expect(h).not.toBe(w.pid);
  await waitUntil(`the restore's memory holder ${h} to be gone`, () => !existsSync(`/proc/${h}`));
  trigger(w);
  expect((await waitResult(w, 15000)).text).toStartWith("PASS");
});
