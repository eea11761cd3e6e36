"""Run any `TrainingTask` factory as one torchrun rank: `python -m common.training.worker MODULE:FACTORY OUT ...`.

`zoo train <bundle>` is the way to train a bundle; this entry serves tasks that are not bundles (a new model being
brought up, the machinery's own tests) with the same loop, launcher semantics and options:

    torchrun --nproc-per-node 2 --standalone -m common.training.worker my_pkg.tasks:make_task runs/x --set lr=0.1
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from common.training.loop import TrainConfig, train


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m common.training.worker", description=__doc__.splitlines()[0])
    p.add_argument("factory", help="MODULE:CALLABLE returning a TrainingTask from a dict of overrides")
    p.add_argument("out", type=Path)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "npu"])
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--resume", type=Path)
    p.add_argument("--stop-after", type=int)
    p.add_argument("--checkpoint-every", type=int, default=0)
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    module, _, name = args.factory.partition(":")
    factory = getattr(importlib.import_module(module), name)
    overrides = dict(s.split("=", 1) for s in args.sets)
    rank = os.environ.get("RANK", "0")
    try:
        result = train(factory(overrides), TrainConfig(out_dir=args.out, device=args.device, workers=args.workers,
                                                       resume=args.resume, stop_after=args.stop_after,
                                                       checkpoint_every=args.checkpoint_every, progress=False))
    except Exception as e:
        print(f"error: rank {rank}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        raise
    return 0 if result.iterations_done > 0 or result.completed else 1


if __name__ == "__main__":
    sys.exit(main())
