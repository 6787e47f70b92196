"""Model-family adapters: default layers, input preparation and output decoding."""

from ..engine.layers import default_layers

__all__ = ["default_layers"]
