"""Build, check and run the bundle images: helpers for ``noxfile.py`` and the tests (standard library only).

Each bundle's image is built from the repository root with its own ``bundles/<bundle>/Dockerfile`` (targets
``cpu`` and ``ascend``; the steps they share are checked copies of ``docker/shared-steps.Dockerfile``, see
common/dockerfiles.py). Third-party packages come from a wheelhouse (``wheelhouse/`` in the build context,
bind-mounted for the one pip step), so builds run offline and the pip layer is reused until
``requirements.txt`` changes. The zoo itself is installed from the context in the last layers, so a code-only
change rebuilds in seconds.

Base images: each Dockerfile's default is the real one of its manifest (``pinned_env.base_image``), pinned by
digest once ``docker/base-images.lock`` records one. Where no registry is reachable, ``ensure_base_image``
builds a local stand-in with ``docker/make-base-image.sh`` (debootstrap) and the lock says it is local.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import tomllib

from common.errors import ZooError

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLES_DIR = REPO_ROOT / "bundles"
WHEELHOUSE = REPO_ROOT / "wheelhouse"  # the Dockerfiles bind-mount exactly this directory of the context
BASE_LOCK = REPO_ROOT / "docker" / "base-images.lock"
MAKE_BASE_IMAGE = REPO_ROOT / "docker" / "make-base-image.sh"
LOCAL_BASE_IMAGE = "zoo-base:bookworm-py3.11"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


class ImageError(ZooError):
    """An image could not be built or its inputs (wheelhouse, base image) are not ready."""


# --------------------------------------------------------------------------------------------- docker engine


def docker_bin() -> str:
    """The Docker client: ``$ZOO_DOCKER``, else the distribution's ``/usr/bin/docker``, else ``docker``."""
    if os.environ.get("ZOO_DOCKER"):
        return os.environ["ZOO_DOCKER"]
    if Path("/usr/bin/docker").is_file():
        return "/usr/bin/docker"
    return shutil.which("docker") or "docker"


def docker_available(timeout: float = 30) -> bool:
    """True when a Docker engine answers (client installed and daemon running)."""
    try:
        r = subprocess.run([docker_bin(), "info"], capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def _docker(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([docker_bin(), *args], check=check, text=True, **kw)


def image_exists(ref: str) -> bool:
    return _docker("image", "inspect", ref, check=False, capture_output=True).returncode == 0


def image_tag(bundle: str, target: str = "cpu") -> str:
    return f"zoo/{bundle}:{target}"


def dockerfile_path(bundle: str) -> Path:
    """``bundles/<bundle>/Dockerfile``: every bundle builds from its own."""
    return BUNDLES_DIR / bundle / "Dockerfile"


# ------------------------------------------------------------------------------------------------- manifest


def _bundle_dir(bundle: str) -> Path:
    d = BUNDLES_DIR / bundle
    if not (d / "manifest.toml").is_file():
        raise ImageError(f"no bundle {bundle!r}; known bundles: {_all_bundles()}")
    return d


def _manifest(bundle: str) -> tuple[dict, str]:
    """The raw manifest table and the sha256 of its bytes (no validation: that is common.manifest's job)."""
    raw = (_bundle_dir(bundle) / "manifest.toml").read_bytes()
    return tomllib.loads(raw.decode("utf-8")), hashlib.sha256(raw).hexdigest()


def requirements_path(bundle: str) -> Path:
    data, _ = _manifest(bundle)
    return _bundle_dir(bundle) / data.get("pinned_env", {}).get("requirements", "requirements.txt")


def _require_image_files(bundle: str) -> None:
    path = requirements_path(bundle)
    if not path.is_file():
        raise ImageError(f"{path} is missing: a bundle image needs its exact pins in requirements.txt")


def _require_dockerfile(bundle: str) -> Path:
    path = dockerfile_path(bundle)
    if not path.is_file():
        raise ImageError(f"{path} is missing: every bundle builds its image from its own Dockerfile "
                         "(copy one of another bundle's and adapt its pins; see the README's Containers section)")
    return path


# ------------------------------------------------------------------------------------------------ wheelhouse

_WHEEL_RE = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(requirements: Path) -> dict[str, str]:
    """``{normalised name: version}`` of a requirements file; anything but ``name==version`` is an error."""
    pins: dict[str, str] = {}
    for n, line in enumerate(Path(requirements).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)", line)
        if not m:
            raise ImageError(f"{requirements}:{n}: {line!r} is not an exact pin (name==version)")
        pins[_norm(m[1])] = m[2]
    return pins


def _wheels(wheelhouse: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for f in Path(wheelhouse).glob("*.whl"):
        m = _WHEEL_RE.match(f.name)
        if m:
            found.setdefault(_norm(m["name"]), set()).add(m["version"])
    return found


def _pinned_wheels(directory: Path, pins: dict[str, str]) -> list[Path]:
    """The wheels in ``directory`` that satisfy one of ``pins``."""
    out = []
    for f in Path(directory).glob("*.whl"):
        m = _WHEEL_RE.match(f.name)
        if m and _norm(m["name"]) in pins and _satisfies(m["version"], pins[_norm(m["name"])]):
            out.append(f)
    return out


def _all_bundles() -> list[str]:
    return sorted(p.parent.name for p in BUNDLES_DIR.glob("*/manifest.toml"))


def _satisfies(version: str, pin: str) -> bool:
    # PEP 440: ==2.13.0 also matches the local build 2.13.0+cpu (the pin carries no local label).
    return version == pin or ("+" not in pin and version.split("+", 1)[0] == pin)


def missing_wheels(requirements: Path, wheelhouse: Path) -> list[str]:
    have = _wheels(wheelhouse)
    return [
        f"{name}=={pin}"
        for name, pin in read_pins(requirements).items()
        if not any(_satisfies(v, pin) for v in have.get(name, ()))
    ]


def check_wheelhouse(requirements: Path, wheelhouse: Path) -> None:
    """Raise ImageError (one line) naming every ``name==version`` of ``requirements`` without a wheel."""
    missing = missing_wheels(requirements, wheelhouse)
    if missing:
        raise ImageError(
            f"wheelhouse {wheelhouse} lacks {len(missing)} wheel(s) pinned in {requirements}: "
            f"{', '.join(missing)}; run `nox -s wheelhouse`"
        )


def wheel_cache_dir() -> Path:
    """Wheels kept across fresh clones: ``$ZOO_WHEEL_CACHE``, else ~/.cache/ascend-zoo/wheels."""
    env = os.environ.get("ZOO_WHEEL_CACHE")
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ascend-zoo" / "wheels"
    return Path(env) if env else base


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def collect_wheelhouse(bundle: str, dest: Path = WHEELHOUSE, *, python: str = sys.executable) -> Path:
    """Download the wheels of ``bundles/<bundle>/requirements.txt`` into ``dest``; return ``dest``.

    Idempotent: nothing is downloaded when every pin already has a wheel. Runs ``pip download`` with the
    user's pip configuration (indexes, find-links, certificates), for the manifest's Python version, binary
    wheels only. Wheels are shared with the machine's wheel cache (``wheel_cache_dir``) both ways, so a fresh
    clone on the same machine collects without downloading.
    The zoo itself is not a wheel here: the Dockerfile installs it from the build context in its last layer,
    so an image can never carry a stale build of the code.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    _require_image_files(bundle)
    req = requirements_path(bundle)
    pins = read_pins(req)
    cache = wheel_cache_dir()
    for whl in _pinned_wheels(cache, pins):
        _link_or_copy(whl, dest / whl.name)
    missing = missing_wheels(req, dest)
    if missing:
        _download(bundle, req, missing, dest, python)
    else:
        print(f"wheelhouse: {bundle}: all {len(pins)} pinned wheels present in {dest}")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        for whl in _pinned_wheels(dest, pins):
            _link_or_copy(whl, cache / whl.name)
    except OSError as e:  # a cache is a convenience, never a failure
        print(f"wheelhouse: could not fill the wheel cache {cache}: {e}")
    return dest


def _download(bundle: str, req: Path, missing: list[str], dest: Path, python: str) -> None:
    data, _ = _manifest(bundle)
    pyver = data.get("pinned_env", {}).get("python", f"{sys.version_info.major}.{sys.version_info.minor}")
    pip = [python, "-m", "pip", "download", "--only-binary=:all:", "--python-version", pyver, "-d", str(dest)]
    print(f"wheelhouse: {bundle}: downloading {len(missing)} wheel(s) for Python {pyver} into {dest}")

    # torch: fetch the CPU build first, so the resolver below picks it from dest instead of the CUDA build
    # that a plain PyPI `torch==X` resolves to on Linux (GBs of nvidia-* wheels).
    torch_pin = read_pins(req).get("torch")
    if torch_pin and "+" not in torch_pin and f"torch=={torch_pin}" in missing:
        spec = f"torch=={torch_pin}+cpu"
        if subprocess.run([*pip, "--no-deps", spec]).returncode != 0:
            print(f"wheelhouse: {spec} not in the configured indexes; trying {TORCH_CPU_INDEX}")
            if subprocess.run([*pip, "--no-deps", "--extra-index-url", TORCH_CPU_INDEX, spec]).returncode:
                raise ImageError(
                    f"cannot download {spec}: configure an index that has it, e.g. "
                    f"`pip config set global.extra-index-url {TORCH_CPU_INDEX}`"
                )
    r = subprocess.run([*pip, "--find-links", str(dest), "-r", str(req)])
    if r.returncode != 0:
        raise ImageError(f"pip download failed for {req} (exit {r.returncode}); see pip's output above")
    check_wheelhouse(req, dest)
    every_pin = {n for b in _all_bundles() if requirements_path(b).is_file() for n in read_pins(requirements_path(b))}
    unpinned = sorted(set(_wheels(dest)) - every_pin)
    if unpinned:
        print(f"wheelhouse: warning: no requirements.txt pins {', '.join(unpinned)} (pulled in as dependencies)")


# ----------------------------------------------------------------------------------------------- base image


def _read_lock(lock: Path) -> dict:
    try:
        return json.loads(Path(lock).read_text())
    except (OSError, ValueError):
        return {}


def default_base_image(bundle: str, target: str = "cpu", lock: Path = BASE_LOCK) -> str:
    """The manifest's base image, pinned by the digest recorded in the lock when there is one."""
    data, _ = _manifest(bundle)
    key = "base_image" if target == "cpu" else "ascend_base_image"
    ref = data.get("pinned_env", {}).get(key)
    if not ref:
        raise ImageError(f"{_bundle_dir(bundle) / 'manifest.toml'}: pinned_env.{key} is not set")
    digest = _read_lock(lock).get(ref, {}).get("digest")
    return f"{ref}@{digest}" if digest and "@" not in ref else ref


def record_base_image(ref: str, lock: Path = BASE_LOCK) -> dict:
    """Write what ``ref`` resolved to into the lock (JSON): the registry digest, or the local image ID."""
    fmt = "{{json .RepoDigests}}\t{{.Id}}"
    r = _docker("image", "inspect", "--format", fmt, ref, check=False, capture_output=True)
    name = ref.split("@", 1)[0]
    if r.returncode != 0:
        return {}
    digests_json, image_id = r.stdout.strip().split("\t")
    repo = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
    digests = [d.split("@", 1)[1] for d in json.loads(digests_json) or [] if d.split("@", 1)[0] == repo]
    if digests:
        entry = {"digest": digests[0], "local": False}
    else:
        entry = {
            "image_id": image_id,
            "local": True,
            "note": "local image (docker/make-base-image.sh or docker import): no registry digest",
        }
    data = _read_lock(lock)
    if {k: v for k, v in data.get(name, {}).items() if k != "recorded"} != entry:
        data[name] = {**entry, "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        Path(lock).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data[name]


def ensure_base_image(bundle: str, lock: Path = BASE_LOCK) -> str | None:
    """The base image to build ``bundle``'s CPU image from, made available locally.

    ``$ZOO_BASE_IMAGE`` wins when set. Else the manifest's image (pinned by the lock's digest) if it is here
    or can be pulled: None is returned, meaning the Dockerfile's default. Else (no registry reachable) the
    local stand-in is built by ``docker/make-base-image.sh`` and its tag is returned.
    """
    if os.environ.get("ZOO_BASE_IMAGE"):
        return os.environ["ZOO_BASE_IMAGE"]
    real = default_base_image(bundle, "cpu", lock)
    if image_exists(real) or _docker("pull", real, check=False, capture_output=True).returncode == 0:
        return None
    print(f"images: cannot pull {real}; using the local debootstrap stand-in {LOCAL_BASE_IMAGE}")
    env = {**os.environ, "DOCKER": docker_bin()}
    r = subprocess.run(["bash", str(MAKE_BASE_IMAGE), LOCAL_BASE_IMAGE], env=env)
    if r.returncode != 0:
        raise ImageError(f"{MAKE_BASE_IMAGE} failed (exit {r.returncode}); set ZOO_BASE_IMAGE instead")
    return LOCAL_BASE_IMAGE


# ---------------------------------------------------------------------------------------------------- build


def _git(*args: str) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None


def build_image(
    bundle: str,
    *,
    target: str = "cpu",
    base_image: str | None = None,
    wheelhouse: Path = WHEELHOUSE,
    ca_bundle: Path | None = None,
    tag: str | None = None,
    lock: Path = BASE_LOCK,
    quiet: bool = False,
) -> str:
    """``docker build`` one bundle image (BuildKit) from ``bundles/<bundle>/Dockerfile``; return its tag.

    ``base_image`` None means the manifest's (digest-pinned when locked). ``ca_bundle`` is handed to the
    build as the BuildKit secret ``ca`` (used by pip only for online builds; never stored in a layer).
    What the base image resolved to is recorded in ``lock``. ``quiet`` captures the build log and shows
    it only on failure. The pins, upstream commit and entrypoint are the Dockerfile's own; only what a file
    cannot know is passed: the base image with its recorded digest, the zoo revision and the manifest hash.
    """
    _require_image_files(bundle)
    dockerfile = _require_dockerfile(bundle)
    if Path(wheelhouse).resolve() != WHEELHOUSE.resolve():
        raise ImageError(f"the Dockerfiles bind-mount {WHEELHOUSE} from the build context; got {wheelhouse}")
    check_wheelhouse(requirements_path(bundle), wheelhouse)
    _, manifest_sha = _manifest(bundle)
    base = base_image or default_base_image(bundle, target, lock)
    tag = tag or image_tag(bundle, target)
    revision = _git("rev-parse", "HEAD") or "unknown"
    build_args = {
        "BASE_IMAGE" if target == "cpu" else "ASCEND_BASE_IMAGE": base,
        "ZOO_REVISION": revision,
        "ZOO_SOURCE": _git("remote", "get-url", "origin") or "unknown",
        "MANIFEST_SHA256": manifest_sha,
    }
    cmd = [docker_bin(), "build", "--progress=plain", "-f", str(dockerfile), "--target", target]
    cmd += ["-t", tag]
    for k, v in build_args.items():
        cmd += ["--build-arg", f"{k}={v}"]
    if ca_bundle is not None:
        cmd += ["--secret", f"id=ca,src={Path(ca_bundle).resolve()}"]
    cmd.append(str(REPO_ROOT))
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    r = subprocess.run(cmd, env=env, text=True, capture_output=quiet)
    if r.returncode != 0:
        log = f"\n{r.stdout[-20000:]}{r.stderr[-20000:]}" if quiet else ""
        raise ImageError(f"docker build of {tag} failed (exit {r.returncode}): {' '.join(cmd)}{log}")
    record_base_image(base, lock)
    return tag


# ------------------------------------------------------------------------------------------------------ run


def run_image(
    tag: str,
    args: Sequence[str] = (),
    *,
    out_dir: Path | None,
    data_dir: Path | None = None,
    out_readonly: bool = False,
    docker_args: Sequence[str] = (),
    timeout: float | None = None,
    capture: bool = True,
) -> subprocess.CompletedProcess:
    """``docker run --rm`` an image as the caller, ``out_dir`` mounted at /out and ``data_dir`` at /data (ro).

    Runs with ``--user $(id -u):$(id -g)`` so what the container writes under ``out_dir`` belongs to the
    caller. Output is captured (text) unless ``capture`` is False; the caller checks ``returncode``.
    """
    cmd = [docker_bin(), "run", "--rm", "--user", f"{os.getuid()}:{os.getgid()}", *docker_args]
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        cmd += ["-v", f"{Path(out_dir).resolve()}:/out" + (":ro" if out_readonly else "")]
    if data_dir is not None:
        cmd += ["-v", f"{Path(data_dir).resolve()}:/data:ro"]
    cmd += [tag, *args]
    return subprocess.run(cmd, capture_output=capture, text=True, timeout=timeout)


def latest_run_dir(out_dir: Path) -> Path | None:
    """The run directory under ``out_dir`` whose ``report.json`` is newest (None if there is none)."""
    reports = [p for p in Path(out_dir).rglob("report.json") if ".cache" not in p.parts]
    return max(reports, key=lambda p: p.stat().st_mtime).parent if reports else None
