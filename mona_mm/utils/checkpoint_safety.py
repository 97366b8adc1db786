"""Let ``torch.load(weights_only=True)`` read the checkpoints mmengine 0.10.7 writes.

torch >= 2.6 loads with ``weights_only=True`` by default and mmengine 0.10.7 does not pass the
flag, so ``--resume`` fails on the ``message_hub`` state (``HistoryBuffer`` holding numpy
arrays). We allow exactly the types mmengine puts there; loading stays ``weights_only`` and any
other pickled object is still refused.
"""
import pickle
from typing import Any, List

import numpy as np
import torch


def mmengine_checkpoint_globals() -> List[object]:
    """Return the non-tensor types found in checkpoints written by mmengine 0.10.7."""
    from mmengine.logging.history_buffer import HistoryBuffer

    # numpy arrays (HistoryBuffer._log_history) and numpy scalars (runtime_info) pickle through
    # these reconstructors; dtypes pickle as their per-dtype class on numpy >= 1.25.
    multiarray = np.core.multiarray
    allowed: List[object] = [
        HistoryBuffer,
        multiarray._reconstruct,
        multiarray.scalar,
        np.ndarray,
        np.dtype,
    ]
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        for name in ('Float64DType', 'Float32DType', 'Float16DType', 'Int64DType',
                     'Int32DType', 'Int16DType', 'Int8DType', 'UInt8DType', 'BoolDType'):
            if hasattr(dtypes, name):
                allowed.append(getattr(dtypes, name))
    return allowed


def history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stand-in for ``builtins.getattr`` inside ``weights_only`` loads.

    A ``HistoryBuffer`` pickles its ``statistics_methods`` as ``getattr(HistoryBuffer, 'min')``
    etc. Allowing the real ``getattr`` would open every attribute of every allowed object
    (module globals included), so only those statistics methods resolve.

    Args:
        obj: The object the pickle asks an attribute of.
        name: The attribute name.
    """
    from mmengine.logging.history_buffer import HistoryBuffer

    # the four built-ins are registered lazily (in the first HistoryBuffer.__init__), so name
    # them; user-registered statistics are in _statistics_methods
    allowed = {'min', 'max', 'current', 'mean'} | set(HistoryBuffer._statistics_methods)
    if obj is HistoryBuffer and name in allowed:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'weights_only load refused getattr({obj!r}, {name!r}): only the statistics methods '
        'of mmengine.logging.HistoryBuffer are allowed')


def register_mmengine_safe_globals() -> None:
    """Add mmengine's checkpoint types to torch's ``weights_only`` allow-list (idempotent)."""
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:  # torch < 2.4 does not load weights_only by default
        return
    add(mmengine_checkpoint_globals() + [(history_buffer_getattr, 'builtins.getattr')])
