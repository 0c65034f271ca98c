// The image layer: CRIU's on-disk format. An image file starts with IMG_COMMON_MAGIC and its own
// magic (inventory.img: its own magic only; stats-*: the service magic), then entries, each a u32
// length and a protobuf message (a few images put raw bytes after an entry); pages-N.img is raw
// pages in the order of pagemap-N.img's entries. Magics in magic.ts, framing in image.ts.
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
