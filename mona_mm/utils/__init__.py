from .checkpoint_safety import (history_buffer_getattr, mmengine_checkpoint_globals,
                                register_mmengine_safe_globals)
from .checkpoint_io import (HASH_KEY, WRITER_KEY, CheckpointError, content_hash,
                            load_checkpoint_file, safe_torch_load, save_checkpoint_file,
                            stamp_hash, validate_arrays, verify_hash)
from .config_text import UnsafeConfigError, parse_config_text, safe_config_text
from .checkpoint_io import register_schemes as register_checkpoint_schemes
from .dist import prepare_cpu_distributed

__all__ = [
    'history_buffer_getattr', 'mmengine_checkpoint_globals', 'register_mmengine_safe_globals',
    'prepare_cpu_distributed', 'HASH_KEY', 'CheckpointError', 'content_hash',
    'load_checkpoint_file', 'safe_torch_load', 'save_checkpoint_file', 'stamp_hash',
    'verify_hash', 'register_checkpoint_schemes', 'WRITER_KEY', 'validate_arrays',
    'UnsafeConfigError', 'parse_config_text', 'safe_config_text'
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
from .load_checks import (CheckpointFitError, LoadRecord, check_checkpoint_fits,  # noqa: E402
                          checkpoint_must_fit)

__all__ += ['CheckpointFitError', 'LoadRecord', 'check_checkpoint_fits', 'checkpoint_must_fit']
