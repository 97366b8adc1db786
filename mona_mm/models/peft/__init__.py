from .adapter import AdapterMethod, BottleneckAdapter
from .adaptformer import AdaptFormerMethod
from .base import (ADAPTER_POINTS, BaseAdapter, BasePEFTMethod, inside_adapter,
                   iter_adapters, replace_adapter)
from .bitfit import BitFit
from .fixed import FixedBackbone
from .full import FullFineTuning
from .lora import LoRAMethod, LoRAMultiheadAttention, LoRAQKV, merge_lora
from .lorand import LoRandAdapter, LoRandMethod, LoRandProjection
from .names import METHOD_SLUGS, method_slug, peft_config, peft_slug
from .mona import (Mona, MonaDeploy, MonaMethod, MonaOp, MonaReference,
                   MonaReferenceMethod)
from .norm_tuning import NormTuning
from .partial import PartialTuning
from .reparameterize import DEPLOY_META_KEY, reparameterize

__all__ = [
    'ADAPTER_POINTS', 'BaseAdapter', 'BasePEFTMethod', 'inside_adapter', 'iter_adapters',
    'replace_adapter', 'AdapterMethod', 'BottleneckAdapter', 'AdaptFormerMethod', 'BitFit',
    'FixedBackbone', 'FullFineTuning', 'LoRAMethod', 'LoRAMultiheadAttention', 'LoRAQKV',
    'merge_lora', 'LoRandAdapter',
    'LoRandMethod', 'LoRandProjection', 'Mona', 'MonaDeploy', 'MonaMethod', 'MonaOp',
    'MonaReference', 'MonaReferenceMethod', 'NormTuning',
    'PartialTuning', 'DEPLOY_META_KEY', 'reparameterize', 'METHOD_SLUGS', 'method_slug',
    'peft_config', 'peft_slug'
]
