"""The bundles' own Dockerfiles (``bundles/<bundle>/Dockerfile``): the shared steps they copy, and their pins.

Each bundle Dockerfile reads and builds on its own; the steps every image shares are verbatim copies of the blocks
in ``docker/shared-steps.Dockerfile``, between ``# >>> shared: NAME`` and ``# <<< shared: NAME`` lines.
``check_dockerfile`` says where a bundle's file differs from that (a drifted block, a missing ``cpu``/``ascend``
target, a root ``USER``, pins that disagree with the manifest and requirements.txt, another bundle's files);
``sync_dockerfile`` rewrites the copies from the template. Standard library only: ``noxfile.py`` imports it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import tomllib

from common.images import BUNDLES_DIR, REPO_ROOT, ImageError, dockerfile_path, read_pins

SHARED_STEPS = REPO_ROOT / "docker" / "shared-steps.Dockerfile"
TARGETS = ("cpu", "ascend")
REQUIRED_BLOCKS = {
    "cpu": ("cpu-base", "pip-wheelhouse", "check-pins", "zoo-install", "labels"),
    "ascend": ("ascend-base", "pip-wheelhouse", "check-pins", "zoo-install", "labels"),
}
# manifest [pinned_env] key -> the global ARG that must state the same value
PIN_ARGS = {
    "base_image": "BASE_IMAGE",
    "ascend_base_image": "ASCEND_BASE_IMAGE",
    "python": "PYTHON_VERSION",
    "cann": "CANN_VERSION",
    "ais_bench_commit": "AIS_BENCH_COMMIT",
    "torch_npu": "TORCH_NPU_VERSION",
}
# global ARGs every bundle Dockerfile declares, so a reader finds each pin in the file (TORCH_NPU_VERSION may be
# empty: inference images have no torch_npu)
REQUIRED_ARGS = (
    "BASE_IMAGE", "ASCEND_BASE_IMAGE", "PYTHON_VERSION", "CANN_VERSION", "TORCH_VERSION", "TORCH_NPU_VERSION",
    "UPSTREAM_REPO", "UPSTREAM_COMMIT",
)
_BEGIN = re.compile(r"^# >>> shared: ([\w.-]+)\s*$")
_END = re.compile(r"^# <<< shared: ([\w.-]+)\s*$")


@dataclass(frozen=True)
class Block:
    """One shared block: its name, the line numbers (0-based) of its two markers, and the lines between."""

    name: str
    begin: int
    end: int
    body: tuple[str, ...]


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction (continuation lines joined), with its 1-based first line."""

    line: int
    keyword: str
    args: str


def blocks(text: str, path: Path) -> list[Block]:
    """The shared blocks of a Dockerfile in order; ImageError on an unbalanced or nested marker."""
    found: list[Block] = []
    lines = text.splitlines()
    open_name, open_at = None, -1
    for i, line in enumerate(lines):
        if m := _BEGIN.match(line):
            if open_name is not None:
                raise ImageError(f"{path}:{i + 1}: block {m[1]!r} opens inside block {open_name!r}")
            open_name, open_at = m[1], i
        elif m := _END.match(line):
            if m[1] != open_name:
                raise ImageError(f"{path}:{i + 1}: `# <<< shared: {m[1]}` closes no open block")
            found.append(Block(m[1], open_at, i, tuple(lines[open_at + 1 : i])))
            open_name = None
    if open_name is not None:
        raise ImageError(f"{path}:{open_at + 1}: block {open_name!r} is never closed")
    return found


def shared_steps(path: Path = SHARED_STEPS) -> dict[str, tuple[str, ...]]:
    """The template's blocks by name."""
    out: dict[str, tuple[str, ...]] = {}
    for b in blocks(path.read_text(), path):
        if b.name in out:
            raise ImageError(f"{path}:{b.begin + 1}: block {b.name!r} is defined twice")
        out[b.name] = b.body
    return out


def render(text: str, steps: dict[str, tuple[str, ...]], path: Path) -> str:
    """`text` with every shared block's body replaced by the template's (unknown names: ImageError)."""
    lines = text.splitlines()
    out: list[str] = []
    pos = 0
    for b in blocks(text, path):
        if b.name not in steps:
            raise ImageError(f"{path}:{b.begin + 1}: no block {b.name!r} in {SHARED_STEPS.name}")
        out += lines[pos : b.begin + 1] + list(steps[b.name])
        pos = b.end
    out += lines[pos:]
    return "\n".join(out) + "\n"


def sync_dockerfile(path: Path, steps: dict[str, tuple[str, ...]] | None = None) -> bool:
    """Rewrite the shared blocks of `path` from the template; True when the file changed."""
    text = path.read_text()
    new = render(text, shared_steps() if steps is None else steps, path)
    if new != text:
        path.write_text(new)
    return new != text


def instructions(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile, continuation lines joined, comments and blank lines dropped."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for i, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # comment lines inside a continued instruction are skipped
            continue
        if not pending:
            start = i
        pending.append(line[:-1] if line.endswith("\\") else line)
        if not line.endswith("\\"):
            keyword, _, args = " ".join(pending).partition(" ")
            out.append(Instruction(start, keyword.upper(), args.strip()))
            pending = []
    return out


def _arg(args: str) -> tuple[str, str | None]:
    name, eq, value = args.partition("=")
    return name.strip(), (value.strip().strip('"') if eq else None)


def _env_pairs(args: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", args)}


def _non_root(user: str) -> bool:
    name = user.split(":", 1)[0].strip()
    return name not in ("", "0", "root")


def _torch_npu_matches(npu: str, torch: str) -> bool:
    # torch_npu releases carry torch's version, optionally with a .postN suffix (2.1.0.post3 for torch 2.1.0)
    return npu == torch or re.fullmatch(re.escape(torch) + r"\.post\d+", npu) is not None


def check_dockerfile(
    bundle: str, *, path: Path | None = None, steps: dict[str, tuple[str, ...]] | None = None
) -> list[str]:
    """Every way `bundle`'s Dockerfile breaks the contract, one line each naming file and line; [] when none."""
    path = path or dockerfile_path(bundle)
    shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    if not path.is_file():
        return [f"{shown}: missing: every bundle with a manifest has its own Dockerfile (cpu + ascend targets)"]
    text = path.read_text()
    steps = shared_steps() if steps is None else steps
    problems: list[str] = []
    try:
        found = blocks(text, path)
    except ImageError as e:
        return [str(e)]
    for b in found:
        if b.name not in steps:
            problems.append(f"{shown}:{b.begin + 1}: unknown shared block {b.name!r} (not in {SHARED_STEPS.name})")
        elif b.body != steps[b.name]:
            problems.append(f"{shown}:{b.begin + 1}: shared block {b.name!r} differs from docker/{SHARED_STEPS.name}"
                            " (edit the template, then run `nox -s dockerfiles`)")

    instrs = instructions(text)
    global_args: dict[str, str | None] = {}
    stages: dict[str, list[Instruction]] = {}
    current: list[Instruction] | None = None
    for ins in instrs:
        if ins.keyword == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", ins.args, re.IGNORECASE)
            name = m[2] if m and m[2] else f"<stage at line {ins.line}>"
            current = stages.setdefault(name, [ins])
        elif current is None:
            if ins.keyword == "ARG":
                name, value = _arg(ins.args)
                global_args[name] = value
        else:
            current.append(ins)
        m = re.search(r"\bbundles/([\w.-]+)/", ins.args)
        if m and m[1] != bundle:
            problems.append(f"{shown}:{ins.line}: refers to bundles/{m[1]}/: a bundle's image uses only its own folder")

    def stage_blocks(stage: list[Instruction]) -> set[str]:
        first = stage[0].line - 1
        later = [s[0].line - 1 for s in stages.values() if s[0].line - 1 > first]
        last = min(later, default=len(text.splitlines()))
        return {b.name for b in found if first < b.begin < last}

    for target in TARGETS:
        stage = stages.get(target)
        if stage is None:
            problems.append(f"{shown}: no `FROM ... AS {target}` stage (every bundle has cpu and ascend targets)")
            continue
        where = f"{shown}:{stage[0].line}"
        have = stage_blocks(stage)
        for name in REQUIRED_BLOCKS[target]:
            if name not in have:
                problems.append(f"{where}: target {target} lacks the shared block {name!r}")
        users = [i for i in stage if i.keyword == "USER"]
        if not users or not _non_root(users[-1].args):
            problems.append(f"{where}: target {target} must end with a non-root USER (got "
                            f"{users[-1].args if users else 'none'!r})")
        env = {k: v for i in stage if i.keyword == "ENV" for k, v in _env_pairs(i.args).items()}
        if env.get("ZOO_BUNDLE") != bundle:
            got = env.get("ZOO_BUNDLE")
            problems.append(f"{where}: target {target} must set ENV ZOO_BUNDLE={bundle} (got {got!r})")
        if not any(i.keyword == "ENTRYPOINT" for i in stage):
            problems.append(f"{where}: target {target} must say what it runs (ENTRYPOINT)")

    problems += _check_pins(bundle, shown, global_args)
    return problems


def _check_pins(bundle: str, shown: Path, args: dict[str, str | None]) -> list[str]:
    """The global ARG defaults against manifest.toml ([upstream], [pinned_env]) and the requirements pins."""
    problems: list[str] = []
    for name in REQUIRED_ARGS:
        if name not in args:
            problems.append(f"{shown}: no global `ARG {name}=...` (each pin is stated in the bundle's Dockerfile)")
    manifest_path = BUNDLES_DIR / bundle / "manifest.toml"
    try:
        manifest = tomllib.loads(manifest_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        return [*problems, f"{manifest_path}: cannot read the manifest: {e}"]
    pinned = manifest.get("pinned_env", {})
    upstream = manifest.get("upstream", {})
    expected: dict[str, str] = {}
    for key, arg in PIN_ARGS.items():
        if isinstance(pinned.get(key), str):
            # a value may carry a note after the version ("2.13.0 (must equal torch's)"): the first word is the pin
            expected[arg] = pinned[key] if arg.endswith("IMAGE") else pinned[key].split()[0]
    for key, arg in (("repo", "UPSTREAM_REPO"), ("commit", "UPSTREAM_COMMIT"), ("patch", "UPSTREAM_PATCH")):
        if isinstance(upstream.get(key), str):
            expected[arg] = upstream[key]
    pins: dict[str, str] = {}
    for req in sorted((BUNDLES_DIR / bundle).glob("requirements*.txt")):
        try:
            pins.update({f"{req.name}:{k}": v for k, v in read_pins(req).items()})
        except ImageError as e:
            problems.append(str(e))
    req_name = pinned.get("requirements", "requirements.txt")
    if f"{req_name}:torch" in pins:
        expected["TORCH_VERSION"] = pins[f"{req_name}:torch"]
    else:
        problems.append(f"bundles/{bundle}/{req_name}: no exact torch pin (the image's TORCH_VERSION)")
    for arg, value in expected.items():
        if arg in args and args[arg] != value:
            problems.append(f"{shown}: ARG {arg}={args[arg]} but the bundle's manifest/requirements say {value}")
    if "AIS_BENCH_COMMIT" in expected and "AIS_BENCH_SHA256" not in args:
        problems.append(f"{shown}: no global `ARG AIS_BENCH_SHA256=` beside AIS_BENCH_COMMIT (the tarball's hash)")
    torch, npu = args.get("TORCH_VERSION") or "", args.get("TORCH_NPU_VERSION") or ""
    if npu and not _torch_npu_matches(npu, torch):
        problems.append(f"{shown}: TORCH_NPU_VERSION={npu} does not match TORCH_VERSION={torch}")
    for key, version in pins.items():
        if key.endswith(":torch-npu") and version != npu:
            problems.append(f"{shown}: {key.split(':')[0]} pins torch_npu=={version} but ARG TORCH_NPU_VERSION={npu!r}")
    return problems


def check_all(bundles: list[str] | None = None) -> dict[str, list[str]]:
    """`check_dockerfile` for every bundle with a manifest (or those named); only bundles with problems."""
    names = bundles if bundles is not None else sorted(p.parent.name for p in BUNDLES_DIR.glob("*/manifest.toml"))
    steps = shared_steps()
    return {b: p for b in names if (p := check_dockerfile(b, steps=steps))}
