from .checkpoint_safety import (history_buffer_getattr, mmengine_checkpoint_globals,
                                register_mmengine_safe_globals)
from .checkpoint_io import (HASH_KEY, CheckpointError, content_hash, load_checkpoint_file,
                            safe_torch_load, save_checkpoint_file, stamp_hash, verify_hash)
from .checkpoint_io import register_schemes as register_checkpoint_schemes
from .dist import prepare_cpu_distributed

__all__ = [
    'history_buffer_getattr', 'mmengine_checkpoint_globals', 'register_mmengine_safe_globals',
    'prepare_cpu_distributed', 'HASH_KEY', 'CheckpointError', 'content_hash',
    'load_checkpoint_file', 'safe_torch_load', 'save_checkpoint_file', 'stamp_hash',
    'verify_hash', 'register_checkpoint_schemes'
]
from .params import count_trainable  # noqa: E402

__all__ += ['count_trainable']
from .adapter_checkpoint import (adapter_state_dict, is_adapter_checkpoint,  # noqa: E402
                                 load_adapter_checkpoint, make_adapter_checkpoint,
                                 trained_keys)

__all__ += [
    'adapter_state_dict', 'is_adapter_checkpoint', 'load_adapter_checkpoint',
    'make_adapter_checkpoint', 'trained_keys'
]
from .build import build_model_from_cfg  # noqa: E402

__all__ += ['build_model_from_cfg']
from .memory import saved_activation_bytes, training_state_bytes  # noqa: E402

__all__ += ['saved_activation_bytes', 'training_state_bytes']
