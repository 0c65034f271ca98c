// every message type of the images (for test/encode.test.ts)
export * from "../src/images/gen/pstree_pb";
export * from "../src/images/gen/core_pb";
export * from "../src/images/gen/core-arches_pb";
export * from "../src/images/gen/inventory_pb";
export * from "../src/images/gen/mm_pb";
export * from "../src/images/gen/files_pb";
export * from "../src/images/gen/fown_pb";
export * from "../src/images/gen/sockets_pb";
export * from "../src/images/gen/ns_pb";
export * from "../src/images/gen/cgroup_pb";
export * from "../src/images/gen/opts_pb";
export * from "../src/images/gen/rpc_pb";
