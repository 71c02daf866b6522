"""`microseg demo`: build a project from real public data and summarise what the engine sees."""

from microseg.demo.run import DemoSummary, run_demo

__all__ = ["DemoSummary", "run_demo"]
