"""Herald's data model (DESIGN.md §2): one module per aggregate, all on one metadata."""

from herald.models.alert import (
    Alert,
    AlertNotification,
    AlertRule,
    AlertStatus,
    NotificationStatus,
    Severity,
    Silence,
)
from herald.models.audit import AuditEvent
from herald.models.base import Base, utcnow
from herald.models.circuit import CircuitState, ProviderCircuit
from herald.models.dead_letter import DeadLetter
from herald.models.integration import (
    Integration,
    IntegrationStatus,
    TokenRefreshAttempt,
    request_refresh,
    set_status,
)
from herald.models.monitoring import Heartbeat, JobRun
from herald.models.oauth import OAuthState
from herald.models.post import (
    IllegalTransition,
    Post,
    PostMetric,
    PostStatus,
    PublishAttempt,
    attempts_since_reschedule,
    transition,
)
from herald.models.workspace import Membership, Role, Workspace

__all__ = [
    "Alert",
    "AlertNotification",
    "AlertRule",
    "AlertStatus",
    "AuditEvent",
    "Base",
    "CircuitState",
    "DeadLetter",
    "Heartbeat",
    "IllegalTransition",
    "Integration",
    "IntegrationStatus",
    "JobRun",
    "Membership",
    "NotificationStatus",
    "OAuthState",
    "Post",
    "PostMetric",
    "PostStatus",
    "ProviderCircuit",
    "PublishAttempt",
    "Role",
    "Severity",
    "Silence",
    "TokenRefreshAttempt",
    "Workspace",
    "attempts_since_reschedule",
    "request_refresh",
    "set_status",
    "transition",
    "utcnow",
]
