from .peft_constructor import (PEFTOptimWrapperConstructor, backbone_lr_mult_warning,
                               trainable_summary)

__all__ = ['PEFTOptimWrapperConstructor', 'backbone_lr_mult_warning', 'trainable_summary']
