from .base import (ADAPTER_POINTS, BaseAdapter, BasePEFTMethod, inside_adapter,
                   iter_adapters, replace_adapter)
from .methods import FixedBackbone, FullFineTuning, MonaMethod
from .mona import Mona, MonaOp

__all__ = [
    'ADAPTER_POINTS', 'BaseAdapter', 'BasePEFTMethod', 'inside_adapter', 'iter_adapters',
    'replace_adapter', 'FixedBackbone', 'FullFineTuning', 'MonaMethod', 'Mona', 'MonaOp'
]
