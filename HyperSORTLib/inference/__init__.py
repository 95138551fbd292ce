"""Decoding latent points into UNets and segmenting volumes with them."""

from HyperSORTLib.inference.decode import TrainedRun

__all__ = ["TrainedRun"]
