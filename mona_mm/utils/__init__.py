from .checkpoint_safety import (history_buffer_getattr, mmengine_checkpoint_globals,
                                register_mmengine_safe_globals)
from .dist import prepare_cpu_distributed

__all__ = [
    'history_buffer_getattr', 'mmengine_checkpoint_globals', 'register_mmengine_safe_globals', 'prepare_cpu_distributed'
]
from .params import count_trainable  # noqa: E402

__all__ += ['count_trainable']
