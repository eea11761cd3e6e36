"""`zoo curate sa_siam --dataset vid --raw <ILSVRC2015> --out <ILSVRC2015-VID-Curation>`: the SiamFC-style 255
crops (data.curate_vid, spec section 9.1) and the train / validation index (data.build_imdb, section 9.2)."""

from __future__ import annotations

from pathlib import Path

from bundles.sa_siam.data import build_imdb, curate_vid
from common.errors import InputError

DATASETS = ("vid",)


def curate(dataset: str, raw_root: Path, out_root: Path, *, workers: int | None = None, progress: bool = True,
           limit: int | None = None):
    """Crop ILSVRC2015 VID into `out_root` (resumable) and write its index; returns the curation report."""
    if dataset not in DATASETS:
        raise InputError(None, f"sa_siam trains on ILSVRC2015 VID only: --dataset vid (got {dataset!r})")
    report = curate_vid(Path(raw_root), Path(out_root), workers=workers, progress=progress, limit=limit)
    build_imdb(Path(out_root))
    return report
