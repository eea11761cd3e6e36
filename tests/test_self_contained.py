"""A plain clone is enough: no code, test or nox session reads anything outside the repository (the project's
`../shared` notes are for reading while building). CI proves it by running the suite from a copy of the tree
with nothing beside it (.ci/run); this test names the offending line sooner."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# a string literal that is (or starts) a path into ../shared: "shared", "shared/specs/...", "../shared/..."
OUTSIDE = re.compile(r"""^[rbuRBU]*(['"])(\.\./)*shared(/|\1)""")
FSTRING_MIDDLE = getattr(tokenize, "FSTRING_MIDDLE", None)  # Python >= 3.12 splits f-strings


def _python_files() -> list[Path]:
    files = [ROOT / "noxfile.py"]
    for top in ("common", "bundles", "tests"):
        files += sorted((ROOT / top).rglob("*.py"))
    return files


def test_no_string_literal_points_outside_the_repository():
    offending = []
    for path in _python_files():
        for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
            text = tok.string
            if tok.type == FSTRING_MIDDLE:
                text = f'"{text}'  # the literal part of an f-string, quoted for the same pattern
            elif tok.type != tokenize.STRING:
                continue
            if OUTSIDE.match(text.lstrip("fF")):
                offending.append(f"{path.relative_to(ROOT)}:{tok.start[0]}: {tok.string}")
    assert not offending, "reads outside the repository (ship the fact with its bundle):\n" + "\n".join(offending)


def test_the_pattern_catches_what_it_must():
    for literal in ('"shared"', "'shared/specs/keys/x.json'", '"../shared/specs"', 'f"../shared/{x}"'):
        assert OUTSIDE.match(literal.lstrip("fF")), literal
    for literal in ('"""RefineDet (shared/specs/refinedet.md)."""', '"shared by bundles"', '"sharedx"'):
        assert not OUTSIDE.match(literal), literal
