"""What a node sends on its control stream and what it is answered, in neither
transport's shape: each transport converts its frames to and from these, and the
session (`session.NodeSession`) works on them alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from edgefn.contract import Instruction
from edgefn.controlplane.deployments.schemas import AckIn
from edgefn.controlplane.errors import ValidationFailed
from edgefn.controlplane.logs.hub import LogLine
from edgefn.controlplane.nodes.schemas import HeartbeatIn

# AckIn.message's limit: a node's long error text is cut, not refused, so one
# verbose failure cannot end its stream.
_ACK_MESSAGE_MAX = 1000


@dataclass(frozen=True)
class Report:
    """What a node reports: `node_id` as the message states it ("" when it does not,
    else it must be the stream's node), `beat` what it says in the heartbeat's shape."""

    node_id: str
    beat: HeartbeatIn


class Hello(Report):
    """The first message of a session: marks the node online with what it runs."""


class Beat(Report):
    """A heartbeat on the stream; answered with a HeartbeatAnswer."""


class Metrics(Report):
    """Load and function states between heartbeats (those fields of `beat` only)."""


@dataclass(frozen=True)
class Ack:
    node_id: str
    ack: AckIn


@dataclass(frozen=True)
class Logs:
    """Functions' log lines, and how many the node dropped before them."""

    node_id: str
    lines: list[LogLine]
    dropped: int = 0


NodeEvent = Hello | Beat | Ack | Metrics | Logs


@dataclass(frozen=True)
class HeartbeatAnswer:
    interval_s: float


Outgoing = Instruction | HeartbeatAnswer


def validated(model: Any, **values: Any) -> Any:
    """`model(**values)`, a ValidationFailed (400) naming the model if it does not fit."""
    try:
        return model(**values)
    except ValidationError as exc:
        raise ValidationFailed(f"{model.__name__}: {exc.errors()[0]['msg']}") from exc


def ack_in(ack_id: Any, state: Any, message: Any) -> AckIn:
    """A node's ack as `ack_instruction` takes it, its message cut to the limit."""
    if isinstance(message, str):
        message = message[:_ACK_MESSAGE_MAX]
    ack: AckIn = validated(AckIn, id=ack_id, state=state, message=message or None)
    return ack


