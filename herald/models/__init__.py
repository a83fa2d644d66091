"""Herald's data model (DESIGN.md §2): one module per aggregate, all on one metadata."""

from herald.models.alert import (
    Alert,
    AlertNotification,
    AlertRule,
    AlertStatus,
    NotificationGroup,
    NotificationStatus,
    Severity,
    Silence,
    StateBehaviour,
)
from herald.models.audit import (
    CHAIN_FORMAT,
    AuditChainHead,
    AuditEvent,
    AuditPersonalData,
    AuditVerification,
    SecurityFinding,
)
from herald.models.base import Base, utcnow
from herald.models.circuit import CircuitState, ProviderCircuit
from herald.models.dead_letter import DeadLetter
from herald.models.integration import (
    Integration,
    IntegrationStatus,
    TokenRefreshAttempt,
    handing_over,
    request_refresh,
    set_status,
)
from herald.models.media import PostMediaUpload
from herald.models.monitoring import EventCount, Heartbeat, JobRun
from herald.models.oauth import OAuthState
from herald.models.post import (
    IllegalTransition,
    Post,
    PostMetric,
    PostStatus,
    PublishAttempt,
    attempts_since_reschedule,
    released_at,
    transition,
)
from herald.models.webhook import (
    DeliveryStatus,
    SubscriptionStatus,
    WebhookDelivery,
    WebhookSubscription,
    record_event,
)
from herald.models.workspace import Membership, Role, Workspace

__all__ = [
    "CHAIN_FORMAT",
    "Alert",
    "AlertNotification",
    "AlertRule",
    "AlertStatus",
    "AuditChainHead",
    "AuditEvent",
    "AuditPersonalData",
    "AuditVerification",
    "Base",
    "CircuitState",
    "DeadLetter",
    "DeliveryStatus",
    "EventCount",
    "Heartbeat",
    "IllegalTransition",
    "Integration",
    "IntegrationStatus",
    "JobRun",
    "Membership",
    "NotificationGroup",
    "NotificationStatus",
    "OAuthState",
    "Post",
    "PostMediaUpload",
    "PostMetric",
    "PostStatus",
    "ProviderCircuit",
    "PublishAttempt",
    "Role",
    "SecurityFinding",
    "Severity",
    "Silence",
    "StateBehaviour",
    "SubscriptionStatus",
    "TokenRefreshAttempt",
    "WebhookDelivery",
    "WebhookSubscription",
    "Workspace",
    "attempts_since_reschedule",
    "handing_over",
    "record_event",
    "released_at",
    "request_refresh",
    "set_status",
    "transition",
    "utcnow",
]
