"""The zoo's shared package: manifest, fetch, convert, backends, metrics, bench, verify, report, CLI."""

__version__ = "0.1.0"
