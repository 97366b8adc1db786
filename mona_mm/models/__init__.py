from .backbones import PEFTSwinBlock, PEFTSwinTransformer, extract_state_dict
from .peft import (ADAPTER_POINTS, BaseAdapter, BasePEFTMethod, FixedBackbone,
                   FullFineTuning, Mona, MonaMethod, MonaOp, inside_adapter, iter_adapters,
                   replace_adapter)

__all__ = [
    'PEFTSwinBlock', 'PEFTSwinTransformer', 'extract_state_dict', 'ADAPTER_POINTS',
    'BaseAdapter', 'BasePEFTMethod', 'FixedBackbone', 'FullFineTuning', 'Mona', 'MonaMethod',
    'MonaOp', 'inside_adapter', 'iter_adapters', 'replace_adapter'
]
