"""Robust-training baselines on HyperSORT's pipeline, and peer rankings of erroneous cases.

Every baseline trains the UNet that the hyper-network generates, on the same preprocessed
data, budget and seed, into a run directory that ``hypersort segment`` reads
(:class:`BaselineTrainer`; methods ``unet``, ``mcpm``, ``pint``, ``ce-threshold``).
:mod:`HyperSORTLib.baselines.ranking` ranks cases by label quality with out-of-fold plain
UNets (cleanlab's segmentation score, an optional dependency) and by their small loss.
"""

from HyperSORTLib.baselines.config import METHODS, BaselineConfig, MCPMConfig, PINTConfig
from HyperSORTLib.baselines.trainer import BaselineTrainer

__all__ = ["METHODS", "BaselineConfig", "MCPMConfig", "PINTConfig", "BaselineTrainer"]
