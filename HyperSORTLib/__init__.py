"""HyperSORT: audit the annotations of a CT segmentation dataset with a hyper-network.

A hyper-network generates the weights of a 3D UNet from a latent vector, with one learned
latent per training sample. After training, the latent table is a map of the dataset:
consistent annotation styles form clusters, erroneous samples sit in low-density regions, and
decoding any point of the map gives a UNet that segments the way that region was annotated.
"""

__version__ = "0.1.0"

#: Version of the run-directory layout (config.json, model.safetensors, checkpoint.pt).
RUN_FORMAT_VERSION = 1
