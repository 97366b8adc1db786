from .peft_swin import PEFTSwinBlock, PEFTSwinTransformer, extract_state_dict

__all__ = ['PEFTSwinBlock', 'PEFTSwinTransformer', 'extract_state_dict']
