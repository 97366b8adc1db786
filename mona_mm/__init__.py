"""mona_mm: Mona adapters and MiMi pruning for Swin backbones on the OpenMMLab 2.0 stack."""
from .utils import register_checkpoint_schemes, register_mmengine_safe_globals
from .version import __version__

# Checkpoints written by mmengine must stay loadable under torch>=2.6's weights_only default
# (needed by --resume); this allow-lists exactly mmengine's own types.
register_mmengine_safe_globals()
# Every mmengine checkpoint scheme (local, URLs, open-mmlab://...) loads weights_only.
register_checkpoint_schemes()

from . import datasets, engine, models, pruning  # noqa: E402,F401  (register everything)

__all__ = ['__version__']
