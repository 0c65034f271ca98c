// Unix socket states a dump used to lose or change silently (test/workloads/unixfix.c MODE): socket
// options the images keep (SO_KEEPALIVE, SO_OOBINLINE, SO_LINGER ... restored now, also from
// CRIU 4.2's images), empty messages in datagram and seqpacket queues (kept, also for CRIU 4.2's
// restore), and the states that are refused at dump with the target left as it was: queued messages
// with credentials, options no image field holds (timestamps, busy polling, SO_PEEK_OFF ...),
// out-of-band bytes and their marks. A dump left running (-R), or refused, leaves each socket's
// SO_PEEK_OFF and SO_PASSCRED as they were (the dump changes them for its look at the queues).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { buildWorkloads, cleanup, criuBun, isAlive, runWorkload, startWorkload } from "./harness";
import { cleanupImages, dump, expectPass, imagesDir, havePeer, roundTrip } from "./engine-helpers";
import { UNSUPPORTED, type UnsupportedKey } from "../src/resources/unsupported";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
afterAll(() => {
  cleanup();
  cleanupImages();
});

const EXACT: [string, string][] = [
  [
    "opts",
    "stream, dgram and seqpacket pairs with every option the images keep set on one end (SO_KEEPALIVE, SO_OOBINLINE, SO_LINGER, SO_REUSEADDR, SO_BROADCAST, SO_DONTROUTE, SO_NO_CHECK, SO_PASSSEC, SO_PRIORITY, SO_MARK, SO_RCVLOWAT, timeouts, SO_SNDBUF and SO_BUF_LOCK), SO_PASSCRED on the other",
  ],
  [
    "zero",
    "empty messages in dgram and seqpacket queues (first, between, last; the head's peeked by the program; sender closed): each in order",
  ],
];

describe("restored exactly (criu-bun dumps and restores)", () => {
  for (const [mode, what] of EXACT) {
    test(`${mode}: ${what}`, async () => {
      const w = await startWorkload("unixfix", [mode], { stderr: "file" });
      const dir = await roundTrip(w, { dumper: "criu-bun", restorer: "criu-bun", tag: `fixb-${mode}` });
      if (mode === "zero") {
        // the restore says what it put back
        const log = readFileSync(join(dir, "restore.log"), "utf8");
        expect(log).toMatch(/6 queued message\(s\) \(4 empty\) put back on unix socket/);
      }
    }, 60_000);
  }

  test("leftrun: a dump left running (-R) reads the queues (empty messages among them) and leaves SO_PEEK_OFF and SO_PASSCRED as they were", async () => {
    const w = await startWorkload("unixfix", ["leftrun"], { stderr: "file" });
    dump(w.pid, imagesDir("fixb-leftrun"), ["-R"]);
    expect(isAlive(w.pid)).toBe(true);
    await expectPass(w);
  }, 60_000);
});

describe.skipIf(!havePeer)("with CRIU 4.2", () => {
  test("opts: CRIU 4.2 dumps, criu-bun restores SO_KEEPALIVE, SO_OOBINLINE, SO_LINGER and the rest", async () => {
    const w = await startWorkload("unixfix", ["opts"], { stderr: "file" });
    await roundTrip(w, { dumper: "criu-4.2", restorer: "criu-bun", tag: "fixb-peer-opts" });
  }, 60_000);

  test("zero: criu-bun dumps empty queued messages, CRIU 4.2 restores them", async () => {
    const w = await startWorkload("unixfix", ["zero"], { stderr: "file" });
    await roundTrip(w, { dumper: "criu-bun", restorer: "criu-4.2", tag: "fixb-bun-zero" });
  }, 60_000);
});

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const UNKEPT = [
  "SO_TIMESTAMP",
  "SO_TIMESTAMPNS",
  "SO_TIMESTAMPING",
  "SO_RXQ_OVFL",
  "SO_BUSY_POLL",
  "SO_SELECT_ERR_QUEUE",
  "SO_WIFI_STATUS",
];
const REFUSED: [string[], UnsupportedKey, RegExp][] = [
  [["passcred"], "unix-queue-cmsg", /SCM_CREDENTIALS on a message queued/],
  [["passcred-stream"], "unix-queue-cmsg", /SCM_CREDENTIALS on a message queued/],
  [["oob"], "unix-oob", /a byte waiting on unix socket/],
  [["oob-inline"], "unix-oob", /a byte waiting \(SO_OOBINLINE\)/],
  [["oobread"], "unix-oob", /the mark of a byte read already, after 3 queued bytes/],
  [["oobmark"], "unix-oob", /the mark of a byte read already, at the head/],
  [["peekoff"], "sockopt", /SO_PEEK_OFF 5 on unix socket/],
  [["leftrun", "refuse"], "sockopt", /SO_TIMESTAMP 1 on unix socket/],
  ...UNKEPT.map((o): [string[], UnsupportedKey, RegExp] => [["unkept", o], "sockopt", new RegExp(`${o} \\d+ on unix`)]),
];

describe("refused at dump in one line; the target runs on as it was", () => {
  for (const [args, key, detail] of REFUSED) {
    test(`${args.join(" ")}: ${UNSUPPORTED[key]}`, async () => {
      const w = await startWorkload("unixfix", args, { stderr: "file" });
      const r = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir(`fixb-refuse-${args.join("-")}`)]);
      expect(r.code).toBe(1);
      const line = r.stderr.trim();
      expect(line.split("\n").length).toBe(1);
      expect(line).toMatch(
        new RegExp(
          `^Error \\(\\w+\\): process ${w.pid} fd \\d+: ${esc(UNSUPPORTED[key])} \\(.*\\) is not supported yet$`
        )
      );
      expect(line).toMatch(detail);
      expect(isAlive(w.pid)).toBe(true);
      expect(readFileSync(`/proc/${w.pid}/status`, "utf8")).toMatch(/TracerPid:\s*0\n/);
      await expectPass(w, 10_000);
    }, 60_000);
  }
});

test("the unixfix checks fail when the state is undone (--selftest-corrupt)", async () => {
  for (const args of [...EXACT.map(([m]) => [m]), ["leftrun"], ...REFUSED.map(([a]) => a)]) {
    const bad = await runWorkload("unixfix", [...args, "--selftest-corrupt"]);
    expect(`${args.join(" ")}: ${bad.summary}`).toStartWith(`${args.join(" ")}: FAIL`);
  }
}, 120_000);
