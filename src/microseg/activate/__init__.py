"""Activation: delivery channels, the idempotent sends ledger, send policies, audience export."""

from microseg.activate.audience import (
    AudienceTooSmallError,
    export_audience,
    normalise_email,
    normalise_phone,
)
from microseg.activate.channels import (
    Channel,
    EmailChannel,
    FileOutboxChannel,
    Message,
    WebhookChannel,
)
from microseg.activate.dispatch import Dispatcher, default_channels, message_from_rendered
from microseg.activate.journey_model import Journey
from microseg.activate.journeys import JourneyEngine
from microseg.activate.ledger import SendLedger, SendMeta, SendResult
from microseg.activate.policy import FrequencyCap, QuietHours, StoreConsent

__all__ = [
    "AudienceTooSmallError",
    "Channel",
    "Dispatcher",
    "EmailChannel",
    "FileOutboxChannel",
    "FrequencyCap",
    "Journey",
    "JourneyEngine",
    "Message",
    "QuietHours",
    "SendLedger",
    "SendMeta",
    "SendResult",
    "StoreConsent",
    "WebhookChannel",
    "default_channels",
    "export_audience",
    "message_from_rendered",
    "normalise_email",
    "normalise_phone",
]
