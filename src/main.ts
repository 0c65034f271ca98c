#!/usr/bin/env bun
// criu-bun entry point. (No top-level await: the executable is compiled to bytecode.)
import { main } from "./cli/index";

main(process.argv.slice(2)).then((code) => process.exit(code));
