// The RPC protocol's messages (criu_req, criu_resp, criu_opts: rpc.proto), for swrk and the
// service. Not images, so not in schemas.ts: image code does not load them.
export * from "./gen/rpc_pb";
