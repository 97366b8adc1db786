"""Backbone family specs; importing this module registers them."""
from . import (beit, convnext, eva02, hivit, mit, pvt, resnet, sam, swin,  # noqa: F401
               swin_v2, vit)
