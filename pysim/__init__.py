"""pysim: the bit-accurate reference of deltanet's sparse delta networks (numpy only)."""

from .artifact import ModelFormatError, load_model, save_model, weights_checksum
from .config import Conv2dLayer, Decoder, DenseLayer, NetworkConfig, mlp_config
from .fixed import FixedFormat
from .model import LayerParams, Model
from .network import DeltaNetwork
from .policy import DeltaPolicy

__all__ = [
    "Conv2dLayer", "Decoder", "DeltaNetwork", "DeltaPolicy", "DenseLayer", "FixedFormat",
    "LayerParams", "Model", "ModelFormatError", "NetworkConfig", "load_model", "mlp_config",
    "save_model", "weights_checksum",
]
