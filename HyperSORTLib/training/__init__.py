"""Training: loss, trainer (step / epoch / callbacks), data-parallel processes and the run directory."""

from HyperSORTLib.rundir import RunDirectoryError
from HyperSORTLib.training.distributed import DistributedContext
from HyperSORTLib.training.losses import DiceCELoss
from HyperSORTLib.training.trainer import Callback, CheckpointCallback, Trainer, TrainResult

__all__ = ["Trainer", "TrainResult", "Callback", "CheckpointCallback", "DiceCELoss",
           "RunDirectoryError", "DistributedContext"]
