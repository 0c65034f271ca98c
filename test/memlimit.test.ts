// A restore inside a container's memory limit: runc moves criu into the container's memory
// cgroup before it restores, so everything criu-bun charges there (its anonymous memory, the
// page cache it reads: images, log, any page of its executable not already cached) counts
// against the container's limit. Here: a fresh memory cgroup of 32 MiB below the test's own,
// criu-bun moved into it before it starts (`echo $$ > cgroup.procs; exec criu-bun restore`), a
// small process restored, the peak charge read back, the cgroup removed.
// cgroup v2 when the memory controller is on the unified hierarchy, else v1 (hybrid hosts such as
// these VMs mount memory on v1).
import { afterAll, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cleanup, criuBunCommand, REPO_ROOT, startWorkload, trigger, waitResult } from "./harness";
import { cleanupImages, dump, imagesDir, killAndWait, waitReaped } from "./engine-helpers";

const LIMIT = 32 << 20;

interface MemCg {
  v: 1 | 2;
  path: string;
}
/** Where a child memory cgroup can go: below our own, on whichever hierarchy has the controller. */
function memCgroupParent(): MemCg | string {
  const lines = readFileSync("/proc/self/cgroup", "utf8")
    .trim()
    .split("\n")
    .map((l) => l.split(":"));
  const v1 = lines.find((l) => l[1].split(",").includes("memory"));
  if (v1 && existsSync("/sys/fs/cgroup/memory/cgroup.procs"))
    return { v: 1, path: join("/sys/fs/cgroup/memory", v1[2]) };
  const v2 = lines.find((l) => l[0] === "0");
  for (const root of ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]) {
    const p = join(root, v2?.[2] ?? "/");
    if (!v2 || !existsSync(join(p, "cgroup.controllers"))) continue;
    if (!readFileSync(join(p, "cgroup.controllers"), "utf8").split(/\s+/).includes("memory")) continue;
    try {
      writeFileSync(join(p, "cgroup.subtree_control"), "+memory");
    } catch {
      /* may be on already */
    }
    if (readFileSync(join(p, "cgroup.subtree_control"), "utf8").split(/\s+/).includes("memory"))
      return { v: 2, path: p };
  }
  return "no memory cgroup controller this test can create a child of";
}

afterAll(() => {
  cleanup();
  cleanupImages();
});

test("a small process restores inside a 32 MiB memory cgroup that criu-bun itself runs in", async () => {
  const parent = memCgroupParent();
  if (typeof parent === "string") {
    console.log(`skipped: ${parent}`);
    return;
  }
  const w = await startWorkload("spin");
  const dir = imagesDir("memcg");
  dump(w.pid, dir);
  await killAndWait(w);
  await waitReaped(w.pid);

  const cg = join(parent.path, `criu-bun-memtest-${process.pid}-${Date.now()}`);
  mkdirSync(cg);
  try {
    if (parent.v === 1) writeFileSync(join(cg, "memory.limit_in_bytes"), String(LIMIT));
    else {
      writeFileSync(join(cg, "memory.max"), String(LIMIT));
      if (existsSync(join(cg, "memory.swap.max"))) writeFileSync(join(cg, "memory.swap.max"), "0");
    }
    // criu-bun joins the cgroup before it starts: every page it charges counts
    const r = Bun.spawnSync(
      [
        "sh",
        "-c",
        `echo $$ > '${cg}/cgroup.procs' && exec "$@"`,
        "sh",
        ...criuBunCommand(),
        "restore",
        "-D",
        dir,
        "-d",
        "-v4",
        "-o",
        "restore.log",
      ],
      {
        cwd: REPO_ROOT,
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe",
        timeout: 60_000,
      }
    );
    const peak = Number(readFileSync(join(cg, parent.v === 1 ? "memory.max_usage_in_bytes" : "memory.peak"), "utf8"));
    const stat = readFileSync(join(cg, "memory.stat"), "utf8");
    const oom =
      parent.v === 1
        ? Number(readFileSync(join(cg, "memory.oom_control"), "utf8").match(/oom_kill (\d+)/)?.[1] ?? 0)
        : Number(readFileSync(join(cg, "memory.events"), "utf8").match(/oom_kill (\d+)/)?.[1] ?? 0);
    const log = existsSync(join(dir, "restore.log")) ? readFileSync(join(dir, "restore.log"), "utf8") : "";
    console.log(
      `cgroup v${parent.v}: peak charge ${(peak / 2 ** 20).toFixed(1)} MiB of ${LIMIT >> 20} MiB; criu-bun ${/VmHWM\): (\d+ kB)/.exec(log)?.[1] ?? "?"} peak RSS (file pages shared with the page cache included)`
    );
    expect(r.stderr.toString()).toBe("");
    expect(r.exitCode).toBe(0);
    expect(oom).toBe(0);
    expect(peak).toBeGreaterThan(0);
    expect(peak).toBeLessThan(LIMIT);
    expect(stat).toMatch(/^(rss|anon) /m); // the charge was read from the cgroup criu-bun ran in
    trigger(w);
    expect((await waitResult(w, 15_000)).text).toStartWith("PASS");
  } finally {
    // anything still in the cgroup is ours (the restored workload): kill it, then remove the cgroup
    for (let i = 0; i < 200; i++) {
      const pids = readFileSync(join(cg, "cgroup.procs"), "utf8").split("\n").filter(Boolean).map(Number);
      for (const p of pids) {
        try {
          process.kill(p, "SIGKILL");
        } catch {}
      }
      try {
        rmdirSync(cg);
        break;
      } catch {
        await Bun.sleep(25);
      }
    }
  }
}, 120_000);
