"""An experiment: its record (record), the config -> parts builders (builders, data), the step
functions (steps), and the assembly of all of them (build)."""

from dlrun.runner.experiment.build import build_experiment
from dlrun.runner.experiment.record import Experiment
from dlrun.runner.experiment.steps import batch_tensors

__all__ = ["Experiment", "batch_tensors", "build_experiment"]
