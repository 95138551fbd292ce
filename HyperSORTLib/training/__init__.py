"""Training: loss, trainer (step / epoch / callbacks) and the run directory."""

from HyperSORTLib.training.checkpoint import RunDirectoryError
from HyperSORTLib.training.losses import DiceCELoss
from HyperSORTLib.training.trainer import Callback, CheckpointCallback, Trainer, TrainResult, resolve_device

__all__ = ["Trainer", "TrainResult", "Callback", "CheckpointCallback", "DiceCELoss", "resolve_device",
           "RunDirectoryError"]
