"""Training: loss, trainer (step / epoch / callbacks) and the run directory."""

from HyperSORTLib.rundir import RunDirectoryError
from HyperSORTLib.training.losses import DiceCELoss
from HyperSORTLib.training.trainer import Callback, CheckpointCallback, Trainer, TrainResult

__all__ = ["Trainer", "TrainResult", "Callback", "CheckpointCallback", "DiceCELoss",
           "RunDirectoryError"]
