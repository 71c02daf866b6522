"""``microseg bench``: one command measuring the whole pipeline on synthetic data.

Generates events at the chosen sizes (deterministic seed), then runs import, traits, 20
segments, real-time updates and decision-API load, each in its own child process (so peak
memory is per step), next to a pandas implementation of the same work where one exists and the
machine's memory-bandwidth floor measured in the same run. Prints a table and writes JSON.
"""

from microseg.bench.runner import BenchOptions, run_bench

__all__ = ["BenchOptions", "run_bench"]
