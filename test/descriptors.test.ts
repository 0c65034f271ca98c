// The generated schemas build their descriptors from graphs precomputed at build time
// (src/images/embed.ts graphFile, written by scripts/embed-descriptors.ts): each must equal, object
// by object, what protobuf-es's createFileRegistry builds from the same FileDescriptorProto.
import { describe, expect, test } from "bun:test";
import { checkGenerated, compareDescFiles } from "../scripts/check-descriptors";
import { file_core } from "../src/images/gen/core_pb";
import { file_files } from "../src/images/gen/files_pb";
import { create, toBinary, fromBinary, createFileRegistry } from "@bufbuild/protobuf";
import { task_core_entrySchema } from "../src/images/gen/core_pb";

describe("descriptors from precomputed graphs", () => {
  test("every generated file's descriptors equal protobuf-es's own", async () => {
    const bad = await checkGenerated();
    expect([...bad].map(([f, d]) => `${f}: ${d.join("; ")}`)).toEqual([]);
  });

  test("the comparison sees a difference (a changed field, a changed name)", () => {
    const reg = (f: typeof file_core) =>
      createFileRegistry(f.proto, (n) => f.dependencies.find((d) => d.proto.name === n)).getFile(f.proto.name)!;
    const other = reg(file_core);
    expect(compareDescFiles(file_core, other)).toEqual([]);
    (other.messages[0].fields[0] as any).packed = !(other.messages[0].fields[0] as any).packed;
    expect(compareDescFiles(file_core, other).length).toBeGreaterThan(0);
    const again = reg(file_files);
    (again.enums[0] as any).typeName += "x";
    expect(compareDescFiles(file_files, again).length).toBeGreaterThan(0);
  });

  test("a message round-trips through them", () => {
    const m = create(task_core_entrySchema, {
      taskState: 1,
      exitCode: 7,
      personality: 0,
      flags: 3,
      comm: "sleep",
      blkSigset: 5n,
    });
    const back = fromBinary(task_core_entrySchema, toBinary(task_core_entrySchema, m));
    expect(back.comm).toBe("sleep");
    expect(back.blkSigset).toBe(5n);
    expect(back.exitCode).toBe(7);
  });
});
