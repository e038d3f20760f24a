"""The EdgeControl gRPC service: node streams that push outbox instructions the
moment they are committed, and the unary heartbeat for nodes without a stream.

`server.ControlServer` runs it; `notifier.Notifier` wakes streams after commits,
those of other replicas through a `bus.Bus`; `messages` converts between the
outbox's JSON and protobuf. grpc stays in here.
"""
