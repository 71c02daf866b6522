"""Project files, settings and taxonomy; the shared definition-file loader."""

from microseg.config.models import ProjectSettings, Taxonomy
from microseg.config.yamlio import Document, load_document, parse_text, validate_model

__all__ = [
    "Document",
    "ProjectSettings",
    "Taxonomy",
    "load_document",
    "parse_text",
    "validate_model",
]
