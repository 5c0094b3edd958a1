"""harness: edge-deployment benchmarking for compressed CNNs (export, fold, build, time, report)."""

__version__ = "0.1.0"
