"""The experiment runner: train/evaluate/compare loops, run directories, checkpoints, metrics."""
