"""nccoord: coordination for agents and services over Apache Kafka alone.

Typed system events on five topics, leader election by leases over a Kafka
log with the term as fencing token, and a consensus broadcaster.
"""

from .candidate import Timing
from .elector import Elector, Leadership, RoleChange
from .errors import (
    BrokerError,
    ConfigError,
    EventError,
    FencedError,
    NccoordError,
    OutcomeUnknownError,
    TransportError,
)
from .topics import TopicNames, ensure_topics

__all__ = [
    "BrokerError",
    "ConfigError",
    "Elector",
    "EventError",
    "FencedError",
    "Leadership",
    "NccoordError",
    "OutcomeUnknownError",
    "RoleChange",
    "Timing",
    "TopicNames",
    "TransportError",
    "ensure_topics",
]

__version__ = "0.1.0"
