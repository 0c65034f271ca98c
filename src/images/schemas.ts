// All generated message schemas in one namespace (import * as S from "./schemas").
export * from "./gen/cgroup_pb";
export * from "./gen/core_pb";
export * from "./gen/files_pb";
export * from "./gen/fown_pb";
export * from "./gen/inventory_pb";
export * from "./gen/mm_pb";
export * from "./gen/ns_pb";
export * from "./gen/pstree_pb";
export * from "./gen/sockets_pb";
