#!/usr/bin/env bun
// criu-bun entry point. (No top-level await: the executable is compiled to bytecode.)
// --version answers before anything else loads (the command modules, the parser and the image schemas
// are imported only for a command); src/version.ts imports nothing.
// The text goes out with fs.writeSync: process.stdout would build a Node stream (it loads the
// streams modules), which about doubled the CPU time of a compiled hello-world.
import { writeSync } from "node:fs";
import { versionText } from "./version";

const argv = process.argv.slice(2);
if (argv.includes("--version") || argv.includes("-V")) {
  writeSync(1, versionText());
  process.exit(0);
} else {
  import("./cli/index").then((m) => m.main(argv)).then((code) => process.exit(code));
}
