"""Reports: ``build_report`` writes a self-contained HTML report with PNG charts."""

from microseg.report.build import build_report

__all__ = ["build_report"]
