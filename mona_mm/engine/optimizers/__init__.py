from .peft_constructor import PEFTOptimWrapperConstructor, trainable_summary

__all__ = ['PEFTOptimWrapperConstructor', 'trainable_summary']
