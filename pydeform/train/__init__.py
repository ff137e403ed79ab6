"""Trainers: `deformgan` (the Deformable GAN) and `common`, the utilities every trainer
shares (atomic checkpoints, JSONL logger, sample grids, seeding, resumable data order,
DistributedDataParallel setup)."""
from pydeform.train.common import (
    DistInfo,
    JsonlLogger,
    ResumableBatchSampler,
    atomic_write,
    load_checkpoint,
    render_pose,
    save_checkpoint,
    save_image_grid,
    seed_everything,
    seed_step,
    setup_distributed,
)

__all__ = [
    "DistInfo",
    "JsonlLogger",
    "ResumableBatchSampler",
    "atomic_write",
    "load_checkpoint",
    "render_pose",
    "save_checkpoint",
    "save_image_grid",
    "seed_everything",
    "seed_step",
    "setup_distributed",
]
