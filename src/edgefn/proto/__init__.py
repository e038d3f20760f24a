"""The gRPC protocol between control plane and edge (`edge_control.proto`).

The Python modules in `_generated` are produced by `scripts/gen_proto.py` and
checked in CI by `scripts/check_proto.py`; never edit them by hand.
"""

from edgefn.proto._generated import edge_control_pb2, edge_control_pb2_grpc

__all__ = ["edge_control_pb2", "edge_control_pb2_grpc"]
