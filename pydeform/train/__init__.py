"""Trainers: `pydeform.train.deformgan` (the Deformable GAN) and `pydeform.train.common`, the
utilities every trainer shares (atomic checkpoints, JSONL logger, sample grids, seeding,
resumable data order, DistributedDataParallel setup)."""
