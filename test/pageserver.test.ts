// criu-bun page-server + dump --page-server: pages cross a TCP connection (CRIU's protocol) and the
// two image directories together restore.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { copyFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import {
  buildWorkloads,
  cleanup,
  startWorkload,
  trigger,
  waitResult,
  isAlive,
  criuBun,
  criuBunCommand,
  waitFor,
} from "./harness";
import { imagesDir, cleanupImages, restore } from "./engine-helpers";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
afterAll(() => {
  cleanup();
  cleanupImages();
});

async function listening(port: number, ms = 10000) {
  await waitFor(
    () =>
      Bun.spawnSync(["ss", "-Hltn", `sport = :${port}`])
        .stdout.toString()
        .trim(),
    `something to listen on ${port}`,
    ms
  );
}

test("a process tree dumped through the page server restores from both directories", async () => {
  const port = 19100 + Math.floor(Math.random() * 800);
  const psDir = imagesDir("ps-recv"),
    dir = imagesDir("ps-dump");
  const server = Bun.spawn(
    [
      ...criuBunCommand(),
      "page-server",
      "-D",
      psDir,
      "--address",
      "127.0.0.1",
      "--port",
      String(port),
      "-v4",
      "-o",
      "ps.log",
    ],
    { stdin: "ignore", stdout: "pipe", stderr: "pipe" }
  );
  await listening(port);
  const w = await startWorkload("forky", ["3"]);
  const r = criuBun([
    "dump",
    "-t",
    String(w.pid),
    "-D",
    dir,
    "--page-server",
    "--address",
    "127.0.0.1",
    "--port",
    String(port),
  ]);
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
}, 120_000); // four crit runs and a restore of four processes: 40 s were seen on a loaded machine

test("no page server listening: the dump fails before freezing anything", async () => {
  const w = await startWorkload("counter");
  const r = criuBun([
    "dump",
    "-t",
    String(w.pid),
    "-D",
    imagesDir("ps-none"),
    "--page-server",
    "--address",
    "127.0.0.1",
    "--port",
    "1",
  ]);
  expect(r.code).not.toBe(0);
  expect(r.stderr).toContain("cannot connect to the page server at 127.0.0.1:1");
  expect(isAlive(w.pid)).toBe(true);
  trigger(w);
  expect((await waitResult(w)).text).toStartWith("PASS");
});

test("a page server that accepts and never answers fails the dump within --timeout; the process keeps running", async () => {
  const net = await import("node:net");
  const held: any[] = [];
  const srv = net.createServer((c) => {
    held.push(c);
  }); // accepts, reads nothing, answers nothing
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  const port = (srv.address() as any).port;
  try {
    const w = await startWorkload("counter");
    const t0 = Date.now();
    const r = criuBun([
      "dump",
      "-t",
      String(w.pid),
      "-D",
      imagesDir("ps-silent"),
      "--page-server",
      "--address",
      "127.0.0.1",
      "--port",
      String(port),
      "--timeout",
      "2",
    ]);
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

/** CRIU 4's page_server_iov: u32 cmd, 4 bytes padding, u64 nr_pages, u64 vaddr, u64 dst_id */
function psi(cmd: number, nr: number, vaddr: bigint, dst: bigint) {
  const b = Buffer.alloc(32);
  b.writeUInt32LE(cmd, 0);
  b.writeBigUInt64LE(BigInt(nr), 8);
  b.writeBigUInt64LE(vaddr, 16);
  b.writeBigUInt64LE(dst, 24);
  return b;
}

async function rawSession(steps: (sock: import("node:net").Socket) => Promise<void>) {
  const port = 19100 + Math.floor(Math.random() * 800);
  const psDir = imagesDir("ps-raw");
  const server = Bun.spawn(
    [
      ...criuBunCommand(),
      "page-server",
      "-D",
      psDir,
      "--address",
      "127.0.0.1",
      "--port",
      String(port),
      "-v4",
      "-o",
      "ps.log",
    ],
    { stdin: "ignore", stdout: "pipe", stderr: "pipe" }
  );
  await listening(port);
  const net = await import("node:net");
  const sock = net.connect(port, "127.0.0.1");
  await new Promise<void>((r, j) => {
    sock.once("connect", () => r());
    sock.once("error", j);
  });
  await steps(sock);
  const code = await server.exited;
  const log = (() => {
    try {
      return require("node:fs").readFileSync(join(psDir, "ps.log"), "utf8");
    } catch {
      return "";
    }
  })();
  return {
    code,
    stderr: (await new Response(server.stderr).text()) + log,
    files: readdirSync(psDir).filter((f) => f.endsWith(".img")),
  };
}
const read = (sock: import("node:net").Socket, n: number) =>
  new Promise<Buffer>((r) => {
    let got = Buffer.alloc(0);
    const on = (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length >= n) {
        sock.off("data", on);
        r(got);
      }
    };
    sock.on("data", on);
  });
const DST = (7n << 8n) | 1n; // pagemap of pid 7

test("page-server: a dumper that hangs up without PS_IOV_CLOSE fails the session, and none of its files stay", async () => {
  const r = await rawSession(async (sock) => {
    const answer = read(sock, 1);
    sock.write(psi(4 /* OPEN2 */, 0, 0n, DST));
    expect((await answer)[0]).toBe(0); // no parent images here
    sock.write(Buffer.concat([psi(6 | (4 << 16) /* ADD_F, PE_PRESENT */, 1, 0x10000n, DST), Buffer.alloc(4096, 7)]));
    sock.end();
  });
  expect(r.code).not.toBe(0);
  expect(r.stderr).toContain("without PS_IOV_CLOSE");
  expect(r.files).toEqual([]);
});

test("page-server: a PE_PARENT hole without parent images is refused (a restore could not find those pages)", async () => {
  const r = await rawSession(async (sock) => {
    const answer = read(sock, 1);
    sock.write(psi(4, 0, 0n, DST));
    await answer;
    sock.write(psi(6 | (1 << 16) /* ADD_F, PE_PARENT */, 3, 0x20000n, DST));
    sock.write(psi(0x1023 /* CLOSE */, 0, 0n, 0n));
  });
  expect(r.code).not.toBe(0);
  expect(r.stderr).toContain("pagemap-7.img: pages 0x20000-0x23000 are in the parent images, but");
  expect(r.files).toEqual([]);
});

test("page-server: a whole session (OPEN2, ADD_F, PARENT, CLOSE) answers as CRIU's and writes pagemap-7.img + pages-65537.img", async () => {
  const r = await rawSession(async (sock) => {
    let answer = read(sock, 1);
    sock.write(psi(4, 0, 0n, DST));
    expect((await answer)[0]).toBe(0);
    sock.write(Buffer.concat([psi(6 | (4 << 16), 2, 0x10000n, DST), Buffer.alloc(8192, 9)]));
    answer = read(sock, 4);
    sock.write(psi(5 /* PARENT */, 0, 0n, DST));
    expect((await answer).readInt32LE(0)).toBe(0);
    answer = read(sock, 4);
    sock.write(psi(0x1023, 0, 0n, 0n));
    expect((await answer).readInt32LE(0)).toBe(0); // the status, once written
    sock.end();
  });
  expect(r.code).toBe(0);
  expect(r.files.sort()).toEqual(["pagemap-7.img", "pages-65537.img"]);
});
