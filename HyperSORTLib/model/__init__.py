"""Networks: the target UNet, the weight generator, the latent table and their composition."""

from HyperSORTLib.model.functional import batched_forward, choose_forward, looped_forward
from HyperSORTLib.model.hypernetwork import WeightGenerator, init_heads_from_target
from HyperSORTLib.model.hypersort import HyperSORTModel
from HyperSORTLib.model.latent import LatentTable, RowwiseAdam
from HyperSORTLib.model.unet import UNet3D

__all__ = ["UNet3D", "WeightGenerator", "init_heads_from_target", "LatentTable", "RowwiseAdam",
           "HyperSORTModel", "batched_forward", "looped_forward", "choose_forward"]
