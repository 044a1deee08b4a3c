"""What a run reads and writes: the run directory, checkpoints, the state in them, the JSONL
metrics log and summary, pending loss reads, plots and TensorBoard event files."""
