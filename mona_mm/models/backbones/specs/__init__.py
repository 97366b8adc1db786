"""Backbone family specs; importing this module registers them."""
from . import beit, convnext, eva02, mit, pvt, resnet, sam, swin, swin_v2, vit  # noqa: F401
