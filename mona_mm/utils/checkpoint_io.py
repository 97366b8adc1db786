"""Every checkpoint mona_mm reads is loaded ``weights_only``; every one it writes is atomic and
carries a content hash that loading verifies.

mmengine resolves checkpoints through :class:`~mmengine.runner.CheckpointLoader` schemes (local
paths, ``http(s)://``, ``open-mmlab://``, ``torchvision://``, ``mmcls://``, ``s3://``...). Its
URL loaders hand the download to ``torch.hub.load_state_dict_from_url``, which unpickles with
``weights_only=False``: a checkpoint URL could run arbitrary code. :func:`register_schemes`
re-registers every scheme (``register_scheme(..., force=True)``, mmengine's extension point)
with loaders that fetch the same bytes and unpickle them with ``weights_only=True`` and the
allow-list of :mod:`.checkpoint_safety`, so ``init_cfg``, ``load_from``, ``--resume``,
the upstream inferencers and our tools are all covered once ``mona_mm`` is imported.
"""
import hashlib
import io
import os
import os.path as osp
import pickle
from typing import Any, Iterator, Optional, Tuple

import numpy as np
import torch
from mmengine.runner.checkpoint import CheckpointLoader

#: Key of the content hash inside ``checkpoint['meta']``.
HASH_KEY = 'mona_mm_sha256'


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: empty, truncated, corrupted or unsafe."""


# ---------------------------------------------------------------------- content hash
def _tensors(obj: Any, path: str = '') -> Iterator[Tuple[str, Any]]:
    if torch.is_tensor(obj) or isinstance(obj, np.ndarray):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if not (path == 'meta' and k == HASH_KEY):
                yield from _tensors(v, f'{path}.{k}' if path else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f'{path}.{i}')


def content_hash(checkpoint: dict) -> str:
    """SHA-256 over every tensor (and numpy array) of a checkpoint: its path in the dict,
    dtype, shape and bytes. The hash itself (``meta.mona_mm_sha256``) is left out.

    Args:
        checkpoint: A checkpoint dict as saved by ``torch.save``.
    """
    h = hashlib.sha256()
    for path, t in _tensors(checkpoint):
        if torch.is_tensor(t):
            t = t.detach().cpu().contiguous()
            h.update(f'{path}|{t.dtype}|{tuple(t.shape)}|'.encode())
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
        else:
            a = np.ascontiguousarray(t)
            h.update(f'{path}|{a.dtype}|{a.shape}|'.encode())
            if a.dtype != object:
                h.update(memoryview(a).cast('B'))
    return h.hexdigest()


def stamp_hash(checkpoint: dict) -> str:
    """Store :func:`content_hash` in ``checkpoint['meta']`` and return it.

    Args:
        checkpoint: A checkpoint dict about to be written.
    """
    meta = checkpoint.get('meta')
    if meta is None:
        meta = checkpoint['meta'] = {}
    digest = content_hash(checkpoint)
    meta[HASH_KEY] = digest
    return digest


def verify_hash(checkpoint: Any, source: str) -> None:
    """Raise :class:`CheckpointError` if ``checkpoint`` carries a content hash that its
    tensors no longer match (a flipped bit, a partial copy, an edited file).

    Args:
        checkpoint: What was loaded.
        source: The file, for the message.
    """
    if not isinstance(checkpoint, dict):
        return
    expected = (checkpoint.get('meta') or {}).get(HASH_KEY)
    if expected is None:
        return  # not written by mona_mm (upstream or third-party checkpoint)
    actual = content_hash(checkpoint)
    if actual != expected:
        raise CheckpointError(
            f'{source} is corrupted: its tensors do not match the content hash written with '
            f'it (sha256 {actual[:12]}... != {expected[:12]}...). Use another copy or the '
            'previous checkpoint of the run.')


# ---------------------------------------------------------------------- reading
def safe_torch_load(file, map_location: Any = 'cpu', source: Optional[str] = None) -> Any:
    """``torch.load(weights_only=True)`` with mona_mm's allow-list and errors that say what
    is wrong with the file (empty, not a checkpoint, pickled code), then the hash check.

    Args:
        file: A path or a binary file object.
        map_location: As for ``torch.load``.
        source: Name for messages (default: the path).
    """
    from .checkpoint_safety import register_mmengine_safe_globals
    register_mmengine_safe_globals()
    source = source or str(file)
    if isinstance(file, (str, os.PathLike)):
        if not osp.isfile(file):
            raise FileNotFoundError(f'checkpoint {source} does not exist')
        if osp.getsize(file) == 0:
            raise CheckpointError(f'checkpoint {source} is empty (0 bytes), e.g. from an '
                                  'interrupted save; use the previous checkpoint of the run')
    if not _looks_like_torch_file(file):
        raise CheckpointError(f'{source} is not a torch checkpoint (neither the zip format of '
                              'torch.save nor its legacy format); truncated or another file?')
    try:
        ckpt = torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if 'Weights only load failed' in text or 'refused' in text:
            detail = next((line for line in text.splitlines()
                           if 'nsupported' in line or 'refused' in line), '')
            raise CheckpointError(
                f'refusing to load {source}: it contains pickled Python objects that are not '
                'tensors or plain data, and unpickling them could run code. mona_mm loads '
                'every checkpoint with weights_only=True. If you trust the file, re-save its '
                f'tensors as a plain state dict in a separate environment. ({detail.strip()})'
            ) from None
        raise CheckpointError(f'{source} is not a readable torch checkpoint (truncated or '
                              f'corrupted?): {text.splitlines()[0][:200]}') from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise CheckpointError(f'{source} is not a readable torch checkpoint (truncated or '
                              f'corrupted?): {type(e).__name__}: {str(e)[:200]}') from None
    verify_hash(ckpt, source)
    return ckpt


# torch.save's legacy (non-zip) format starts with its pickled magic number
_LEGACY_MAGIC = b'\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19'


def _looks_like_torch_file(file) -> bool:
    if isinstance(file, (str, os.PathLike)):
        with open(file, 'rb') as f:
            head = f.read(len(_LEGACY_MAGIC))
    else:
        pos = file.tell()
        head = file.read(len(_LEGACY_MAGIC))
        file.seek(pos)
    return head.startswith(b'PK\x03\x04') or head == _LEGACY_MAGIC


def load_checkpoint_file(filename: str, map_location: Any = 'cpu') -> Any:
    """Load a checkpoint from a path or any mmengine scheme (URLs included), safely.

    Args:
        filename: Local path, ``http(s)://`` URL, ``open-mmlab://name``...
        map_location: As for ``torch.load``.
    """
    register_schemes()
    return CheckpointLoader.load_checkpoint(filename, map_location=map_location)


# ---------------------------------------------------------------------- writing
def save_checkpoint_file(checkpoint: dict, path: str) -> str:
    """Write ``checkpoint`` with a content hash, atomically: a temporary file in the same
    folder, flushed to disk, then renamed over ``path``. A crash leaves the old file.

    Args:
        checkpoint: The dict to save (its ``meta`` gets the hash).
        path: Destination.

    Returns:
        The content hash.
    """
    digest = stamp_hash(checkpoint)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # the name SafeCheckpointHook cleans up after a crash
    tmp = osp.join(folder, f'.{osp.basename(path)}.tmp-{os.getpid()}')
    try:
        with open(tmp, 'wb') as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    return digest


# ---------------------------------------------------------------------- mmengine schemes
def load_from_local(filename: str, map_location=None) -> Any:
    filename = osp.expanduser(filename)
    return safe_torch_load(filename, map_location=map_location)


def load_from_http(filename: str, map_location=None, model_dir: Optional[str] = None,
               progress: bool = True) -> Any:
    from urllib.parse import urlparse
    from torch.hub import download_url_to_file, get_dir
    model_dir = model_dir or osp.join(get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    cached = osp.join(model_dir, osp.basename(urlparse(filename).path) or 'checkpoint.pth')
    if not osp.exists(cached):
        download_url_to_file(filename, cached, None, progress=progress)
    return safe_torch_load(cached, map_location=map_location, source=filename)


def load_from_zoo(filename: str, map_location=None) -> Any:
    """``torchvision://``, ``modelzoo://``, ``open-mmlab://``, ``openmmlab://``, ``mmcls://``:
    mmengine's name -> URL tables, then the safe URL loader."""
    from mmengine.runner import checkpoint as mc
    scheme, name = filename.split('://', 1)
    if scheme in ('torchvision', 'modelzoo'):
        url = mc.get_torchvision_models()[name]
    elif scheme == 'mmcls':
        return mc._process_mmcls_checkpoint(
            load_from_http(mc.get_mmcls_models()[name], map_location))
    else:
        urls = mc.get_external_models()
        name = mc.get_deprecated_model_names().get(name, name)
        url = urls[name]
        if not url.startswith(('http://', 'https://')):
            return safe_torch_load(osp.join(mc._get_mmengine_home(), url), map_location)
    return load_from_http(url, map_location)


def load_from_storage(filename: str, map_location=None) -> Any:
    """Any other storage mmengine's file backends read (``s3://``, ``petrel://``...)."""
    from mmengine.fileio import get_file_backend
    data = get_file_backend(filename).get(filename)
    return safe_torch_load(io.BytesIO(data), map_location=map_location, source=filename)


_REGISTERED = False


def register_schemes() -> None:
    """Route every mmengine checkpoint scheme through the ``weights_only`` loaders above
    (idempotent; done when ``mona_mm`` is imported)."""
    global _REGISTERED
    if _REGISTERED:
        return
    register = CheckpointLoader.register_scheme
    for prefix in list(CheckpointLoader._schemes):
        if prefix == '':
            register(prefix, load_from_local, force=True)
        elif prefix in ('http://', 'https://'):
            register(prefix, load_from_http, force=True)
        elif prefix in ('torchvision://', 'modelzoo://', 'open-mmlab://', 'openmmlab://',
                        'mmcls://'):
            register(prefix, load_from_zoo, force=True)
        elif prefix == 'pavi://':
            register(prefix, load_from_pavi, force=True)
        else:
            register(prefix, load_from_storage, force=True)
    _REGISTERED = True


def load_from_pavi(filename: str, map_location=None) -> Any:
    raise CheckpointError(f'{filename}: pavi:// checkpoints are not supported by mona_mm '
                          '(they cannot be loaded weights_only); download the file and pass '
                          'its local path')
