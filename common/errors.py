"""Errors a user can act on. Each message names the file (or key) and what is wrong with it."""

from __future__ import annotations

from pathlib import Path


class ZooError(Exception):
    """Base class: the CLI prints the message on one line and exits with a non-zero status."""

    exit_code = 2


class InputError(ZooError):
    """Bad user input: a file is missing, malformed or inconsistent."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class ManifestError(InputError):
    """A bundle manifest is malformed."""


class ChecksumError(InputError):
    """A downloaded or cached artifact does not match its published hash."""


class FetchError(ZooError):
    """An artifact could not be downloaded from any of its sources."""


class UnsafeArchiveError(InputError):
    """An archive member would escape the target directory or create a link or device."""


class CheckpointError(InputError):
    """A checkpoint's keys or shapes do not match the model."""


class BackendUnavailable(ZooError):
    """A backend's runtime (ais_bench, CUDA, ...) is not installed or not usable here."""
