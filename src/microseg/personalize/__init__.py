"""Personalisation: versioned content blocks and sandboxed templates (decision rules build on these)."""

from microseg.personalize.content import (
    BlockSpec,
    ContentBlock,
    ContentRepo,
    ProfileContextLoader,
    Rendered,
    VariantSpec,
    load_project_content,
    parse_content,
    render_block,
    select_variant,
    validate_content_document,
)
from microseg.personalize.templates import TemplateCache, TemplateProblem, default_cache

__all__ = [
    "BlockSpec",
    "ContentBlock",
    "ContentRepo",
    "ProfileContextLoader",
    "Rendered",
    "TemplateCache",
    "TemplateProblem",
    "VariantSpec",
    "default_cache",
    "load_project_content",
    "parse_content",
    "render_block",
    "select_variant",
    "validate_content_document",
]
