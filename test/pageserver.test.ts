// criu-bun page-server + dump --page-server: pages cross a TCP connection (CRIU's protocol) and the
// two image directories together restore.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { copyFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { buildWorkloads, cleanup, startWorkload, trigger, waitResult, isAlive, criuBun, criuBunCommand } from "./harness";
import { imagesDir, cleanupImages, restore, waitReaped } from "./engine-helpers";

beforeAll(async () => { await buildWorkloads(); }, 120_000);
afterAll(() => { cleanup(); cleanupImages(); });

async function listening(port: number, ms = 10000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const ss = Bun.spawnSync(["ss", "-Hltn", `sport = :${port}`]).stdout.toString();
    if (ss.trim()) return;
    await Bun.sleep(20);
  }
  throw new Error(`nothing listens on ${port}`);
}

test("a process tree dumped through the page server restores from both directories", async () => {
  const port = 19100 + Math.floor(Math.random() * 800);
  const psDir = imagesDir("ps-recv"), dir = imagesDir("ps-dump");
  const server = Bun.spawn([...criuBunCommand(), "page-server", "-D", psDir, "--address", "127.0.0.1", "--port", String(port), "-v4", "-o", "ps.log"],
    { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  await listening(port);
  const w = await startWorkload("forky", ["3"]);
  await Bun.sleep(150);
  const r = criuBun(["dump", "-t", String(w.pid), "-D", dir, "--page-server", "--address", "127.0.0.1", "--port", String(port)]);
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
  expect(await server.exited).toBe(0);
  // the pages are on the server's side only
  expect(readdirSync(dir).filter((f) => /^(pagemap-\d+|pages-\d+)\.img$/.test(f))).toEqual([]);
  const received = readdirSync(psDir).filter((f) => /^(pagemap-\d+|pages-\d+)\.img$/.test(f));
  expect(received.filter((f) => f.startsWith("pagemap-")).length).toBe(4);
  for (const f of received) {
    if (f.startsWith("pagemap-")) expect(Bun.spawnSync(["crit", "decode", "-i", join(psDir, f)]).exitCode).toBe(0);
    copyFileSync(join(psDir, f), join(dir, f));
  }
  const rr = await restore(dir, w.pid);
  trigger(w);
  expect((await waitResult(w, 15000)).text).toStartWith("PASS");
  expect(await rr.proc.exited).toBe(0);
});

test("no page server listening: the dump fails before freezing anything", async () => {
  const w = await startWorkload("counter");
  const r = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir("ps-none"), "--page-server", "--address", "127.0.0.1", "--port", "1"]);
  expect(r.code).not.toBe(0);
  expect(r.stderr).toContain("cannot connect to the page server at 127.0.0.1:1");
  expect(isAlive(w.pid)).toBe(true);
  trigger(w);
  expect((await waitResult(w)).text).toStartWith("PASS");
  void waitReaped;
});

test("a page server that accepts and never answers fails the dump within --timeout; the process keeps running", async () => {
  const net = await import("node:net");
  const held: any[] = [];
  const srv = net.createServer((c) => { held.push(c); }); // accepts, reads nothing, answers nothing
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  const port = (srv.address() as any).port;
  try {
    const w = await startWorkload("counter");
    const t0 = Date.now();
    const r = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir("ps-silent"), "--page-server", "--address", "127.0.0.1", "--port", String(port), "--timeout", "2"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("the page server did not answer within 2 s");
    expect(Date.now() - t0).toBeLessThan(30000);
    const status = require("node:fs").readFileSync(`/proc/${w.pid}/status`, "latin1");
    expect(status).not.toMatch(/^State:\s+[tT]/m);
    expect(status).toMatch(/^TracerPid:\s+0$/m);
    trigger(w);
    expect((await waitResult(w)).text).toStartWith("PASS");
  } finally {
    for (const c of held) c.destroy();
    srv.close();
  }
}, 60000);
