from .backbones import *  # noqa: F401,F403
from .backbones import __all__ as _backbones_all
from .peft import *  # noqa: F401,F403
from .peft import __all__ as _peft_all

__all__ = list(_backbones_all) + list(_peft_all)
