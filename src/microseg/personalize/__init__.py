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
from microseg.personalize.templates import DEFAULT_CACHE, TemplateCache, TemplateProblem

__all__ = [
    "DEFAULT_CACHE",
    "BlockSpec",
    "ContentBlock",
    "ContentRepo",
    "ProfileContextLoader",
    "Rendered",
    "TemplateCache",
    "TemplateProblem",
    "VariantSpec",
    "load_project_content",
    "parse_content",
    "render_block",
    "select_variant",
    "validate_content_document",
]
