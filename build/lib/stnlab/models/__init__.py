"""Localisation nets, the spatial transformer, backbones and the STN classifier (no Lightning)."""

from stnlab.models.backbones import CNN, FCN
from stnlab.models.classifier import STNClassifier
from stnlab.models.loc_nets import ConvLocNet, FCLocNet
from stnlab.models.transformer import ICSpatialTransformer, SpatialTransformer

__all__ = [
    "CNN",
    "FCN",
    "ConvLocNet",
    "FCLocNet",
    "ICSpatialTransformer",
    "STNClassifier",
    "SpatialTransformer",
]
