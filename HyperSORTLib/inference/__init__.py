"""Decoding latent points into UNets and segmenting scans with them."""

from HyperSORTLib.inference.decode import TrainedRun
from HyperSORTLib.inference.geometry import PreparedVolume, ScanError, load_scan, prepare_volume
from HyperSORTLib.inference.interactive import ClusterInfo, InteractiveSegmenter, LabelVolume, read_clusters

__all__ = ["TrainedRun", "InteractiveSegmenter", "LabelVolume", "ClusterInfo", "read_clusters", "PreparedVolume",
           "ScanError", "load_scan", "prepare_volume"]
