"""HTTP API: FastAPI app factory, event collector, decision serving state, API keys."""

from microseg.api.app import create_app
from microseg.api.serving import CommittedBatch, ProfileState, ServingState
from microseg.api.settings import ApiSettings

__all__ = ["ApiSettings", "CommittedBatch", "ProfileState", "ServingState", "create_app"]
