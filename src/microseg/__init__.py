"""microseg: micro-targeted audience segmentation and personalisation on DuckDB."""

from microseg.config.models import ProjectSettings
from microseg.config.sources import FieldMap, SourceSpec
from microseg.errors import DefinitionError, MicrosegError
from microseg.ingest.pipeline import ImportResult
from microseg.workspace import Workspace

__all__ = [
    "DefinitionError",
    "FieldMap",
    "ImportResult",
    "MicrosegError",
    "ProjectSettings",
    "SourceSpec",
    "Workspace",
]
__version__ = "0.1.0"
