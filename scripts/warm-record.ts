// The pages a dump and a restore of a small process touch in the runtime's heap arena, recorded by
// running the executable just built (src/sys/warm.ts explains what they are for). scripts/build.ts
// compiles the result into the executable; `sh scripts/bun scripts/warm-record.ts [EXE]` prints it.
//
// A `sleep` (its own session, stdio on /dev/null) is dumped with -R ROUNDS times, then killed and
// restored -d ROUNDS times (each restored one killed and reaped before the next), every run with
// CRIU_BUN_WARM_RECORD on the command's own file: each round populates what the earlier ones saw
// and adds what it touched besides (the rounds converge). Recording needs what a dump needs (ptrace
// of the sleep, root for the restore): without it the result is the reason, and the build goes on
// without a table.
import { dlopen, FFIType } from "bun:ffi";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const ROUNDS = 8;

// The restored sleeps are orphans once criu-bun exits: this process is their subreaper
// (PR_SET_CHILD_SUBREAPER) and reaps each one (waitpid), so the next restore finds the pid free at
// once, whatever the machine's init does about orphans (one here reaps them every ~2 s).
const { symbols: libc } = dlopen("libc.so.6", {
  prctl: { args: [FFIType.i32, FFIType.u64, FFIType.u64, FFIType.u64, FFIType.u64], returns: FFIType.i32 },
  waitpid: { args: [FFIType.i32, FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
});
const PR_SET_CHILD_SUBREAPER = 36,
  WNOHANG = 1;

/** Reap the orphans the runs left (criu-bun's exit helper, a restored sleep); no spawn of ours runs. */
function reapOrphans(): void {
  while (libc.waitpid(-1, null, WNOHANG) > 0);
}

/** One run of the command, recording: the pages it touched besides `table`'s are added to it. */
function run(exe: string, args: string[], table: Record<string, number[]>, file: string): { ok: boolean; err: string } {
  const r = Bun.spawnSync([exe, ...args], {
    env: {
      ...process.env,
      CRIU_BUN_WARM_RECORD: file,
      CRIU_BUN_WARM_TABLE: JSON.stringify(table),
      CRIU_BUN_WARM: undefined,
    },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    timeout: 30_000,
  });
  const err = `${r.stderr.toString()}${r.stdout.toString()}`.trim().split("\n").pop() ?? "";
  if (r.exitCode !== 0) return { ok: false, err: r.exitCode === null ? `${args[0]} did not end in 30 s` : err };
  const pages = new Set<number>();
  const runs = table[args[0]];
  for (let i = 0; i + 1 < runs.length; i += 2) for (let p = runs[i]; p < runs[i] + runs[i + 1]; p++) pages.add(p);
  if (existsSync(file))
    for (const line of readFileSync(file, "latin1").split("\n")) {
      const m = /^(\d+) (\d+)$/.exec(line);
      if (m) for (let p = Number(m[1]); p < Number(m[1]) + Number(m[2]); p++) pages.add(p);
    }
  const merged: number[] = [];
  for (const p of [...pages].sort((a, b) => a - b)) {
    const n = merged.length;
    if (n && merged[n - 2] + merged[n - 1] === p) merged[n - 1]++;
    else merged.push(p, 1);
  }
  table[args[0]] = merged;
  return { ok: true, err };
}

/** { dump, restore }: [first page, pages, ...] each; or why nothing was recorded. */
export async function recordWarm(exe: string): Promise<Record<string, number[]> | string> {
  const dir = mkdtempSync(join(tmpdir(), "criu-bun-warm-"));
  const images = join(dir, "images");
  let sleeper: ReturnType<typeof Bun.spawn> | undefined;
  let restored = 0;
  const table: Record<string, number[]> = { dump: [], restore: [] };
  libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  try {
    sleeper = Bun.spawn(["setsid", "sleep", "1000"], { stdio: ["ignore", "ignore", "ignore"] });
    const pid = sleeper.pid;
    mkdirSync(images);
    for (let i = 0; i < ROUNDS; i++) {
      const r = run(exe, ["dump", "-t", String(pid), "-D", images, "-R"], table, join(dir, "dump.runs"));
      if (!r.ok) return `dump of a sleep failed: ${r.err}`;
    }
    sleeper.kill("SIGKILL");
    await sleeper.exited; // reaped: its pid is free for the restore
    reapOrphans();
    for (let i = 0; i < ROUNDS; i++) {
      const r = run(exe, ["restore", "-D", images, "-d"], table, join(dir, "restore.runs"));
      if (!r.ok) return `restore of a sleep failed: ${r.err}`;
      restored = pid;
      process.kill(pid, "SIGKILL");
      if (libc.waitpid(pid, null, 0) !== pid) return `the restored sleep ${pid} is not ours to reap`;
      restored = 0;
      reapOrphans();
    }
    if (!table.dump.length || !table.restore.length) return "no arena pages recorded";
    return table;
  } finally {
    try {
      sleeper?.kill("SIGKILL");
    } catch {}
    if (restored)
      try {
        process.kill(restored, "SIGKILL");
        libc.waitpid(restored, null, 0);
      } catch {}
    reapOrphans();
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const exe = process.argv[2] ?? join(import.meta.dir, "..", "criu-bun");
  const t = await recordWarm(exe).catch((e: unknown) => `recording failed: ${(e as Error)?.message ?? e}`);
  if (typeof t === "string") {
    console.error(`warm-record: ${t}`);
    process.exit(1);
  }
  for (const [cmd, runs] of Object.entries(t)) {
    let pages = 0;
    for (let i = 1; i < runs.length; i += 2) pages += runs[i];
    console.log(`${cmd}: ${runs.length / 2} runs, ${pages} pages`);
  }
}
