"""Localisation nets, the spatial transformer, backbones and the STN classifier (no Lightning)."""

from stnlab.models.backbones import CNN, FCN
from stnlab.models.classifier import STNClassifier
from stnlab.models.colocaliser import Colocaliser, CropEncoder, triplet_hinge
from stnlab.models.loc_nets import ConvLocNet, FCLocNet
from stnlab.models.transformer import ICSpatialTransformer, SpatialTransformer

__all__ = [
    "CNN",
    "FCN",
    "Colocaliser",
    "ConvLocNet",
    "CropEncoder",
    "FCLocNet",
    "ICSpatialTransformer",
    "STNClassifier",
    "SpatialTransformer",
    "triplet_hinge",
]
