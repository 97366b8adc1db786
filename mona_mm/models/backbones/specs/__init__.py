"""Backbone family specs; importing this module registers them."""
from . import convnext, swin, vit  # noqa: F401
