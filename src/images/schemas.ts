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

import type { DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
/** What create(schema, init) takes for a schema: dump records are built as these, so a misspelled
 *  field does not compile instead of vanishing from the image. */
export type Init<D extends DescMessage> = MessageInitShape<D>;
/** The same without the message branch: a record built field by field (its nested messages as
 *  init objects too) */
export type InitOf<D extends DescMessage> = Exclude<MessageInitShape<D>, MessageShape<D>>;
