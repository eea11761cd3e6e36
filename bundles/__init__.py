"""One sub-package per model bundle; each folder's manifest.toml is its single source of truth."""
