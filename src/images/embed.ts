// The descriptors of the generated schemas (src/images/gen), as scripts/embed-descriptors.ts
// writes them: each .proto file's FileDescriptorProto as an object literal, turned into a DescFile
// here. Same result as protobuf-es's fileDesc(base64), without decoding anything at start-up.
// messageDesc/enumDesc below do what codegenv2's functions of those names do (find a message or
// enum by its index path); importing any value from @bufbuild/protobuf/codegenv2 would load its
// descriptor.proto, built at once (~5 ms).
import { createFileRegistry, type DescEnum, type DescFile, type DescMessage } from "@bufbuild/protobuf";
import type { FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import type { GenEnum, GenMessage } from "@bufbuild/protobuf/codegenv2";

export function embeddedFile(proto: object, deps: DescFile[] = []): DescFile {
  const p = proto as FileDescriptorProto;
  p.dependency = deps.map((d) => d.proto.name);
  const file = createFileRegistry(p, (name) => deps.find((d) => d.proto.name === name)).getFile(p.name);
  if (!file) throw new Error(`embedded descriptor of ${p.name} did not register`);
  return file;
}

/** The message at index `path` of a file, then down through nested message indexes. */
export function messageDesc(file: DescFile, path: number, ...paths: number[]): GenMessage<any> {
  let m: DescMessage = file.messages[path];
  for (const i of paths) m = m.nestedMessages[i];
  return m as GenMessage<any>;
}

/** The enum at index `path` of a file; with more indexes: message indexes, then the enum's. */
export function enumDesc(file: DescFile, path: number, ...paths: number[]): GenEnum<any> {
  if (!paths.length) return file.enums[path] as GenEnum<any>;
  let m: DescMessage = file.messages[path];
  for (const i of paths.slice(0, -1)) m = m.nestedMessages[i];
  return m.nestedEnums[paths[paths.length - 1]] as DescEnum as GenEnum<any>;
}
