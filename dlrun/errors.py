"""User-facing error types: the CLI turns any DlrunError into one line and exit 1."""


class DlrunError(Exception):
    """Base of every error a user can cause and fix (bad config, data, checkpoint, device)."""


class ConfigError(DlrunError):
    """The experiment config is malformed or invalid; the message names the file and key."""


class DataError(DlrunError):
    """A dataset is missing, corrupt or inconsistent; the message names the file."""


class CheckpointError(DlrunError):
    """A checkpoint is missing, corrupt or does not fit the model."""


class DeviceError(DlrunError):
    """The requested device is not available (no CuPy, no GPU)."""


class NumericalError(DlrunError):
    """A NaN or Inf appeared (e.g. in the loss); the message names the step."""


class TraceError(DlrunError):
    """A function cannot be traced into a static graph (e.g. data-dependent control flow)."""


class ExecutionError(DlrunError):
    """A compiled plan failed while running; the message names the node, its op and source line."""


class ExportError(DlrunError):
    """A model cannot be exported (an op without a lowering, a batch-dependent attribute, a
    missing optional extra) or the exported file does not reproduce dlrun's outputs."""


class DistributedError(DlrunError):
    """A multi-process job cannot start or a worker failed; the message names the rank."""


class SweepError(DlrunError):
    """A sweep cannot start or go on: Optuna missing, a storage that cannot be reached, a sweep
    folder in use by another `dlrun sweep`, a worker process that died."""
