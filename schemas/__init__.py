"""Wire contracts shared by every producer and consumer of rollout-controller."""

from schemas.decode import MAX_RECORD_BYTES, Rejection, decode
from schemas.envelope import ENVELOPES, EVENT_ADAPTER, Envelope, envelope_class, make_event
from schemas.events import *  # noqa: F403  # the payload models are the package's API
from schemas.events import PAYLOAD_BY_TYPE, PAYLOADS, Payload, Topic

__all__ = [
    "ENVELOPES",
    "EVENT_ADAPTER",
    "MAX_RECORD_BYTES",
    "PAYLOADS",
    "PAYLOAD_BY_TYPE",
    "Envelope",
    "Payload",
    "Rejection",
    "Topic",
    "decode",
    "envelope_class",
    "make_event",
]
