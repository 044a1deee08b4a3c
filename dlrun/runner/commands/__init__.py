"""The commands besides train: eval, compare (with its CUDA timing), gradcheck, graph report,
export and runs; each returns what it found and reports through events."""
