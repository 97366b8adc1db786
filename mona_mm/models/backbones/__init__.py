from . import specs  # noqa: F401  (registers the backbone family specs)
from .injection import (BlockAdapters, PEFTBackboneMixin, build_peft_method,
                        extract_state_dict, is_peft_backbone, peft_backbone_class)
from .peft_backbone import PEFTBackbone
from .peft_swin import SWIN_ARCHS, PEFTSwinTransformer, PEFTSwinTransformerV2
from .peft_vit import PEFTVisionTransformer
from .spec import AdapterPoint, BackboneSpec, get_spec, register_spec

__all__ = [
    'AdapterPoint', 'BackboneSpec', 'BlockAdapters', 'PEFTBackbone', 'PEFTBackboneMixin',
    'PEFTSwinTransformer', 'PEFTSwinTransformerV2', 'PEFTVisionTransformer', 'SWIN_ARCHS',
    'build_peft_method', 'extract_state_dict', 'get_spec', 'is_peft_backbone',
    'peft_backbone_class', 'register_spec'
]
