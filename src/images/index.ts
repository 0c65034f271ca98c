// The image layer: CRIU's on-disk format (see /work/shared/design/IMAGES.md).
export * from "./magic";
export * from "./image";
export * from "./json";
export { create, toBinary, fromBinary, isFieldSet, type Message } from "@bufbuild/protobuf";
export * from "./gen/pstree_pb";
export * from "./gen/core_pb";
export * from "./gen/inventory_pb";
export * from "./gen/mm_pb";
export * from "./gen/files_pb";
export * from "./gen/fown_pb";
export * from "./gen/sockets_pb";
export * from "./gen/ns_pb";
export * from "./gen/cgroup_pb";
