"""Node control streams: the outbox's instructions pushed the moment they are
committed, acks and heartbeats back, over gRPC or a WebSocket.

`session.NodeSession` is the stream, written once on neutral messages (`events`);
`server` (the EdgeControl gRPC service, with its unary heartbeat; protobuf converted
in `messages`) and `websocket` (JSON frames on the node listener or the API port)
are its transports; `notifier.Notifier` wakes sessions after commits, those of
other replicas through a `bus.Bus`. grpc stays in `server` and `messages`.
"""
