from .backbones import PEFTSwinBlock, PEFTSwinTransformer, extract_state_dict
from .peft import *  # noqa: F401,F403
from .peft import __all__ as _peft_all

__all__ = ['PEFTSwinBlock', 'PEFTSwinTransformer', 'extract_state_dict'] + list(_peft_all)
