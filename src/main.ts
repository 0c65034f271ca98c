#!/usr/bin/env bun
// criu-bun entry point.
// --version answers before anything else loads (the command modules, the parser and the image schemas
// are imported only for a command, each its own chunk of the executable: scripts/build.ts);
// src/version.ts imports nothing.
// The text goes out with console.log, which writes the fd itself: process.stdout would build a
// Node stream (it loads the streams modules, about doubling the CPU time of a compiled hello-world),
// and importing node:fs for writeSync costs ~5 ms of CPU and 4 MiB of RSS more than console.log.
import { versionText } from "./version";

const argv = process.argv.slice(2);
if (argv.includes("--version") || argv.includes("-V")) {
  console.log(versionText().trimEnd());
  process.exit(0);
} else {
  // the heap pages the command will touch, populated before its modules load (src/sys/warm.ts)
  import("./sys/warm")
    .then((w) => {
      w.warmUp(argv);
      return import("./cli/index");
    })
    .then((m) => m.main(argv))
    .then((code) => process.exit(code));
}
