"""Training: `pydeform.train.engine` (the one loop: data order, seeding, AMP, torchrun,
logging, samples, checkpoints, resume, the run folder), one recipe per model family
(`pydeform.train.deformgan`, `pydeform.train.stgan`) and `pydeform.train.common`, what the
engine and the recipes share."""
