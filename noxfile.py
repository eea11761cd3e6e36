"""The zoo's tasks. `nox -l` is the menu; a bare `nox` runs lint and tests.

Every bundle builds from its own bundles/<bundle>/Dockerfile; the steps they share are copies of the blocks in
docker/shared-steps.Dockerfile (`nox -s dockerfiles` rewrites them; `lint` and the tests fail while one differs).
Image sessions (images, <bundle>, bench) need a running Docker engine with BuildKit (Docker >= 20.10) and the
wheelhouse (`nox -s wheelhouse`, collected automatically by them). Base image: `$ZOO_BASE_IMAGE` when set;
else the manifest's real base image (`python:3.11-slim`, digest-pinned once docker/base-images.lock records
one) when it is here or can be pulled; else, with no registry reachable, a local debootstrap stand-in made by
docker/make-base-image.sh (needs root and debootstrap).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "tests"]

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from common import dockerfiles, images  # noqa: E402  (standard library only: importable by nox's own interpreter)

PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
BUNDLES = sorted(p.parent.name for p in (ROOT / "bundles").glob("*/manifest.toml"))
CODE_REBUILD_TARGET_S = 30.0


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite with pytest (image tests need Docker: with CI=true they fail rather than skip)."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "test"))
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Run the linter (ruff check), then check every bundle Dockerfile (shared blocks, targets, user, pins)."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", *(session.posargs or ["."]))
    problems = [p for found in dockerfiles.check_all().values() for p in found]
    if problems:
        session.error("bundle Dockerfiles:\n" + "\n".join(problems))
    session.log(f"bundle Dockerfiles: {len(BUNDLES)} checked against docker/shared-steps.Dockerfile and the manifests")


@nox.session(name="dockerfiles", python=False, default=False)
def sync_dockerfiles(session: nox.Session) -> None:
    """Rewrite the shared blocks of every bundles/*/Dockerfile from docker/shared-steps.Dockerfile."""
    for path in sorted((ROOT / "bundles").glob("*/Dockerfile")):
        changed = dockerfiles.sync_dockerfile(path)
        session.log(f"{path.relative_to(ROOT)}: {'rewritten' if changed else 'up to date'}")


@nox.session(python=False, default=False)
def wheelhouse(session: nox.Session) -> None:
    """Collect the pinned wheels of every bundle into wheelhouse/ (the images install only from there)."""
    for bundle in BUNDLES:
        images.collect_wheelhouse(bundle)


def _build(session: nox.Session, bundle: str, quiet: bool = False) -> str:
    images.collect_wheelhouse(bundle)
    base = images.ensure_base_image(bundle)
    session.log(f"building {images.image_tag(bundle)} from {base or 'the manifest base image'}")
    return images.build_image(bundle, base_image=base, quiet=quiet)


@nox.session(name="images", python=False, default=False, tags=["images"])
def build_images(session: nox.Session) -> None:
    """Build every bundle's CPU image (zoo/<bundle>:cpu)."""
    for bundle in BUNDLES:
        _build(session, bundle)


def _image_eval(session: nox.Session, bundle: str) -> None:
    tag = _build(session, bundle)
    out = ROOT / "runs" / bundle
    session.log(f"docker run {tag} eval {' '.join(session.posargs)}  (/out = {out})")
    r = images.run_image(tag, ["eval", *session.posargs], out_dir=out, capture=False)
    run_dir = images.latest_run_dir(out)
    if r.returncode != 0 or run_dir is None:
        session.error(f"eval in {tag} failed (exit {r.returncode}); see the output above")
    session.install("-e", ".")
    session.run("zoo", "verify", str(run_dir))


def _bundle_session(bundle: str) -> None:
    def run(session: nox.Session) -> None:
        _image_eval(session, bundle)

    run.__doc__ = f"Build the {bundle} CPU image, run eval in it (./runs/{bundle} at /out), verify on the host."
    run.__name__ = bundle
    nox.session(name=bundle, default=False, tags=["images", "bundle"])(run)


for _bundle in BUNDLES:
    _bundle_session(_bundle)


@nox.session(default=False)
@nox.parametrize("bundle", BUNDLES, ids=BUNDLES)
def host(session: nox.Session, bundle: str) -> None:
    """Run eval for one bundle on this machine without Docker, then verify the run directory."""
    session.install("-e", ".")
    run_dir = ROOT / "runs" / bundle / f"{bundle}-host-{time.strftime('%Y%m%d-%H%M%S')}"
    session.run("zoo", "eval", bundle, "--out", str(run_dir), *session.posargs)
    session.run("zoo", "verify", str(run_dir))


@nox.session(default=False)
@nox.parametrize("bundle", BUNDLES, ids=BUNDLES)
def bench(session: nox.Session, bundle: str) -> None:
    """Print throughput numbers for one bundle, and the image's code-only rebuild time vs the 30 s target."""
    session.install("-e", ".")
    session.run("zoo", "bench", bundle, *session.posargs)
    if not images.docker_available():
        session.warn("no Docker engine: code-only image rebuild not measured")
        return
    t0 = time.monotonic()
    _build(session, bundle, quiet=True)
    first = time.monotonic() - t0
    # A code-only change: a new file in the package (content, not just mtime, decides BuildKit's cache).
    stamp = ROOT / "common" / "_rebuild_stamp.py"
    stamp.write_text(f"# temporary, written by `nox -s bench`: {time.time()}\n")
    try:
        t0 = time.monotonic()
        _build(session, bundle, quiet=True)
        rebuild = time.monotonic() - t0
    finally:
        stamp.unlink()
    verdict = "within" if rebuild <= CODE_REBUILD_TARGET_S else "OVER"
    session.log(f"{bundle}: image build with the cache as found: {first:.1f} s")
    target = f"{verdict} the {CODE_REBUILD_TARGET_S:.0f} s target"
    session.log(f"{bundle}: code-only image rebuild: {rebuild:.1f} s ({target})")
    _build(session, bundle, quiet=True)  # leave the image at the tree's code (cached layers: seconds)
