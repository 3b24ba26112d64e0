"""yapo-bench: a benchmark and evaluation harness for preference-optimized activation steering."""

__version__ = "0.1.0"
