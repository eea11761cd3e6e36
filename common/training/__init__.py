"""The shared training machinery (shared/DESIGN.md, "Training bundles"): process group and device placement
(`distributed`), resumable sharded sampling (`sampler`), checkpoints with everything a resume needs (`state`), the
JSONL log, throughput meter, progress and plots (`log`), the loop itself (`loop`) and the torchrun launcher
(`launch`). A bundle supplies a `TrainingTask`: its recipe, dataset, targets and losses."""
