#!/usr/bin/env bun
// criu-bun entry point.
import { main } from "./cli/index";

const code = await main(process.argv.slice(2));
process.exit(code);
