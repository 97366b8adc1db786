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
import re
from typing import Any, List, Optional

import numpy as np
import torch
from mmengine.runner.checkpoint import CheckpointLoader

#: Key of the content hash inside ``checkpoint['meta']``.
HASH_KEY = 'mona_mm_sha256'
#: Marker every checkpoint mona_mm's savers write sits beside the hash: a file that carries
#: it (or the hash key) without a valid hash is refused, so deleting or renaming the hash
#: does not turn a mona_mm checkpoint into an unverified one.
WRITER_KEY = 'mona_mm_writer'
#: Version prefix of the hash value: v2 covers the whole checkpoint (v1, tensors only, is
#: refused with a message saying how to re-stamp).
HASH_VERSION = 'v2'


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: empty, truncated, corrupted or unsafe."""


# ---------------------------------------------------------------------- content hash
def _feed(h: 'hashlib._Hash', obj: Any, depth: int = 0) -> None:
    """Feed a canonical, typed serialisation of ``obj`` into ``h``: every value counts
    (tensors by dtype, shape and bytes; strings, numbers, None; dict items in key order with
    a state dict's ``_metadata``; objects by type and attributes)."""
    if depth > 64:
        raise CheckpointError('checkpoint nested more than 64 levels deep')
    if torch.is_tensor(obj):
        t = obj.detach().cpu().contiguous()
        h.update(f'T{t.dtype}{tuple(t.shape)}:'.encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    elif isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        h.update(f'A{a.dtype.str}{a.shape}:'.encode())
        h.update(memoryview(a).cast('B'))
    elif isinstance(obj, np.generic):
        h.update(f'N{obj.dtype.str}:'.encode() + obj.tobytes())
    elif isinstance(obj, str):
        data = obj.encode('utf-8', 'surrogatepass')
        h.update(f'S{len(data)}:'.encode() + data)
    elif isinstance(obj, (bytes, bytearray)):
        h.update(f'B{len(obj)}:'.encode() + bytes(obj))
    elif obj is None or isinstance(obj, (bool, int, complex)):
        h.update(f'{type(obj).__name__}:{obj!r};'.encode())
    elif isinstance(obj, float):
        h.update(f'F{obj.hex()};'.encode())
    elif isinstance(obj, dict):
        items = sorted(obj.items(), key=lambda kv: (type(kv[0]).__name__, repr(kv[0])))
        h.update(f'D{len(items)}:'.encode())
        for k, v in items:
            _feed(h, k, depth + 1)
            _feed(h, v, depth + 1)
        metadata = getattr(obj, '_metadata', None)  # state-dict records live here
        if metadata is not None:
            h.update(b'M')
            _feed(h, metadata, depth + 1)
    elif isinstance(obj, (list, tuple)):
        h.update(f'{"L" if isinstance(obj, list) else "U"}{len(obj)}:'.encode())
        for v in obj:
            _feed(h, v, depth + 1)
    elif isinstance(obj, (torch.dtype, torch.device, torch.Size)):
        h.update(f'O{obj!r};'.encode())
    elif callable(obj) and hasattr(obj, '__qualname__'):
        h.update(f'C{getattr(obj, "__module__", "")}.{obj.__qualname__};'.encode())
    else:  # allow-listed objects (mmengine's HistoryBuffer): type and attributes
        cls = type(obj)
        h.update(f'O{cls.__module__}.{cls.__qualname__}:'.encode())
        _feed(h, dict(vars(obj)) if hasattr(obj, '__dict__') else repr(obj), depth + 1)


def content_hash(checkpoint: dict) -> str:
    """SHA-256 over the whole checkpoint: tensors, arrays, meta (class names, epoch,
    config...), message hub, optimizer state, state-dict records. Only the hash itself
    (``meta.mona_mm_sha256``) is left out. Returned as ``'v2:<hex>'``.

    Args:
        checkpoint: A checkpoint dict as saved by ``torch.save``.
    """
    h = hashlib.sha256()
    top = dict(checkpoint)
    if isinstance(top.get('meta'), dict):
        top['meta'] = {k: v for k, v in top['meta'].items() if k != HASH_KEY}
    _feed(h, top)
    return f'{HASH_VERSION}:{h.hexdigest()}'


def stamp_hash(checkpoint: dict) -> str:
    """Mark ``checkpoint`` as written by mona_mm and store :func:`content_hash` in its
    ``meta``; return the hash.

    Args:
        checkpoint: A checkpoint dict about to be written.
    """
    from mona_mm.version import __version__
    meta = checkpoint.get('meta')
    if meta is None:
        meta = checkpoint['meta'] = {}
    meta[WRITER_KEY] = f'mona_mm {__version__}'
    digest = content_hash(checkpoint)
    meta[HASH_KEY] = digest
    return digest


_STAMP_HINT = ('If you trust the file as it is, re-stamp it with `python '
               'tools/misc/stamp_checkpoint.py FILE`; otherwise use another copy or the previous '
               'checkpoint of the run.')


def verify_hash(checkpoint: Any, source: str) -> None:
    """Raise :class:`CheckpointError` if ``checkpoint`` was written by mona_mm (it carries
    the hash or the writer mark) and its content no longer matches the hash: a flipped bit,
    a partial copy, edited class names or epoch, a deleted or renamed hash.

    Files without either mark (upstream or third-party checkpoints, ``torch.save``) load
    unverified; see the README, section "Reliability".

    Args:
        checkpoint: What was loaded.
        source: The file, for the message.
    """
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get('meta'), dict):
        return
    meta = checkpoint['meta']
    expected = meta.get(HASH_KEY)
    if expected is None:
        if WRITER_KEY in meta:
            raise CheckpointError(
                f'{source} was written by mona_mm ({meta[WRITER_KEY]!r}) but carries no content '
                f'hash (meta.{HASH_KEY} deleted or renamed): it cannot be verified. '
                + _STAMP_HINT)
        return  # not written by mona_mm (upstream or third-party checkpoint)
    if not isinstance(expected, str) or not expected.startswith(HASH_VERSION + ':'):
        raise CheckpointError(
            f'{source} carries a content hash of an older mona_mm (tensors only, '
            f'{str(expected)[:16]}...), which does not cover its meta data. ' + _STAMP_HINT)
    actual = content_hash(checkpoint)
    if actual != expected:
        raise CheckpointError(
            f'{source} is corrupted or was edited: its content (tensors, meta, message hub) '
            f'does not match the hash written with it ({actual[:15]}... != {expected[:15]}...).'
            f' {_STAMP_HINT}')


# ---------------------------------------------------------------------- numpy arrays
def _unsafe_array(a: Any) -> Optional[str]:
    """Why an unpickled numpy array or scalar must not be touched (None: it is fine).

    Pickled arrays rebuild their dtype from state the file controls, and the pickle can give
    a dtype a new state after an array was built on it: a sub-array shape makes 8 bytes claim
    8 MB (read past the buffer), a "holds objects" flag crashes the process, fields and object
    dtypes point anywhere. Checked on the descriptor alone, before any data is read.
    """
    dt = a if isinstance(a, np.dtype) else a.dtype
    if dt.kind not in 'biufc' or dt.fields is not None or dt.subdtype is not None or \
            dt.hasobject or dt.flags != 0 or dt.itemsize != _ITEMSIZE.get(dt.char):
        return f'dtype {dt!r} (flags {dt.flags}; only plain numeric dtypes are allowed)'
    if isinstance(a, np.ndarray):
        if not a.flags.owndata:
            base = a.base
            try:
                size = memoryview(base).nbytes
            except TypeError:
                return f'array buffer of type {type(base).__name__}'
            if a.nbytes > size:
                return f'array of {a.nbytes} bytes over a buffer of {size}'
    return None


#: item sizes of the plain numeric dtypes, fixed before any file is read
_ITEMSIZE = {c: np.dtype(c).itemsize for c in '?bBhHiIlLqQefdgFDG'}


def _neutralise(dt: np.dtype) -> None:
    """Give a forged dtype a plain state again, so that freeing the refused array does not
    follow its forged layout (a "holds objects" flag on a float64 crashes the process when
    the array is freed). Only descriptor fields are written; no data is read."""
    try:
        order = dt.byteorder if dt.byteorder in '<>|=' else '='
        dt.__setstate__((3, order, None, None, None, -1, -1, 0))
    except Exception:  # the refusal stands either way
        pass


def validate_arrays(obj: Any, source: str, depth: int = 0) -> None:
    """Refuse numpy arrays and scalars of a loaded checkpoint that are not plain numeric
    data of a consistent size (see :func:`_unsafe_array`), before anything reads them.

    Args:
        obj: What ``torch.load`` returned.
        source: The file, for the message.
    """
    if depth > 64:
        raise CheckpointError(f'refusing to load {source}: nested more than 64 levels deep')
    if isinstance(obj, (np.ndarray, np.generic, np.dtype)):
        why = _unsafe_array(obj)
        if why:
            _neutralise(obj if isinstance(obj, np.dtype) else obj.dtype)
            raise CheckpointError(f'refusing to load {source}: it holds a numpy {why}; '
                                  'such data is crafted to read or write outside its memory')
    elif isinstance(obj, dict):
        for k, v in obj.items():
            validate_arrays(k, source, depth + 1)
            validate_arrays(v, source, depth + 1)
        if getattr(obj, '_metadata', None) is not None:
            validate_arrays(obj._metadata, source, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            validate_arrays(v, source, depth + 1)
    elif not torch.is_tensor(obj) and hasattr(obj, '__dict__') and \
            not callable(obj):  # HistoryBuffer
        validate_arrays(vars(obj), source, depth + 1)


# ---------------------------------------------------------------------- reading
def safe_torch_load(file, map_location: Any = 'cpu', source: Optional[str] = None,
                    verify: bool = True) -> Any:
    """``torch.load(weights_only=True)`` with mona_mm's allow-list and errors that say what
    is wrong with the file (empty, not a checkpoint, pickled code), then: numpy arrays
    checked before anything reads them, the content hash verified, and config text made
    data (:func:`~mona_mm.utils.config_text.sanitize_checkpoint_configs`).

    Args:
        file: A path or a binary file object.
        map_location: As for ``torch.load``.
        source: Name for messages (default: the path).
        verify: Check the content hash (only ``tools/misc/stamp_checkpoint.py`` skips it).
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
    except Exception as e:  # whatever unpickling the file's objects raised
        raise CheckpointError(f'{source} is not a readable torch checkpoint (truncated or '
                              f'corrupted?): {type(e).__name__}: {str(e)[:200]}') from None
    validate_arrays(ckpt, source)  # before the hash reads any array
    if verify:
        verify_hash(ckpt, source)
    from .config_text import sanitize_checkpoint_configs
    sanitize_checkpoint_configs(ckpt, source)
    _warn_unverified(ckpt, source)
    return ckpt


def _warn_unverified(ckpt: Any, source: str) -> None:
    """Say so when a file carries mona_mm records but no hash (saved by mmengine's
    ``CheckpointHook`` or ``torch.save``): it loads, unverified."""
    if not isinstance(ckpt, dict):
        return
    meta = ckpt.get('meta') if isinstance(ckpt.get('meta'), dict) else {}
    if HASH_KEY in meta:
        return
    ours = sorted(k for k in meta if str(k).startswith('mona_mm'))
    if not ours:
        from mona_mm.models.backbones.injection import checkpoint_records
        sd = ckpt.get('state_dict', ckpt)
        ours = ['backbone records'] if checkpoint_records(sd) else []
    if ours:
        from mmengine.logging import MMLogger
        MMLogger.get_current_instance().warning(
            f'{source} carries mona_mm data ({", ".join(map(str, ours))}) but no content hash '
            "(saved by mmengine's CheckpointHook or torch.save?): loaded without verification. "
            "Save with mona_mm.SafeCheckpointHook, or stamp it: python "
            'tools/misc/stamp_checkpoint.py FILE')


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
    remove_stale_tmp_files(path)
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


#: the temp name of an atomic save of ``NAME`` by process ``PID``: ``.NAME.tmp-PID``
_TMP_NAME = re.compile(r'^\..+\.tmp-(\d+)$')


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_tmp_files(path: str, any_name: bool = False) -> List[str]:
    """Remove the temp files (``.NAME.tmp-PID``) that killed saves left behind: those whose
    process is gone. A save in progress (live PID) is left alone. Both atomic savers use
    this: :func:`save_checkpoint_file` before each save and ``SafeCheckpointHook`` before a
    run trains.

    Args:
        path: The destination of a save; with ``any_name``, a folder.
        any_name: Remove the stale temp files of every name in the folder ``path``, not only
            those of the file ``path``.

    Returns:
        The removed files.
    """
    if any_name:
        folder, prefix = osp.abspath(path), None
    else:
        folder, prefix = osp.dirname(osp.abspath(path)), f'.{osp.basename(path)}.tmp-'
    removed: List[str] = []
    if not osp.isdir(folder):
        return removed
    for name in sorted(os.listdir(folder)):
        match = _TMP_NAME.match(name)
        if match is None or (prefix is not None and not name.startswith(prefix)):
            continue
        pid, full = int(match.group(1)), osp.join(folder, name)
        if pid != os.getpid() and not _pid_alive(pid) and osp.isfile(full):
            try:
                os.remove(full)
                removed.append(full)
            except OSError:
                pass
    return removed


# ---------------------------------------------------------------------- mmengine schemes
def load_from_local(filename: str, map_location=None) -> Any:
    filename = osp.expanduser(filename)
    return safe_torch_load(filename, map_location=map_location)


def url_cache_path(url: str, model_dir: str) -> str:
    """Where a downloaded checkpoint is cached: its file name behind a digest of the whole
    URL, so ``http://h/a/model.pth`` and ``http://h/b/model.pth`` are two files.

    Args:
        url: The checkpoint URL.
        model_dir: The cache folder.
    """
    from urllib.parse import urlparse
    name = osp.basename(urlparse(url).path) or 'checkpoint.pth'
    return osp.join(model_dir, f'{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}')


#: OpenMMLab model-zoo names end in ``-<first 8+ hex digits of the file's SHA-256>.pth``
_NAME_DIGEST = re.compile(r'-((?=[0-9]*[a-f])[0-9a-f]{8,64})\.pth?$')  # dates are no digest


def load_from_http(filename: str, map_location=None, model_dir: Optional[str] = None,
                   progress: bool = True) -> Any:
    """Download (once per URL) and load ``weights_only``. A file whose name carries a
    SHA-256 prefix (the model-zoo convention) must match it.

    Args:
        filename: The URL.
        map_location: As for ``torch.load``.
        model_dir: Cache folder (default ``$TORCH_HOME/checkpoints``).
        progress: Show the download progress.
    """
    from urllib.parse import urlparse
    from torch.hub import download_url_to_file, get_dir
    from .pretrained import sha256_of
    model_dir = model_dir or osp.join(get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    cached = url_cache_path(filename, model_dir)
    if not osp.exists(cached):
        download_url_to_file(filename, cached, None, progress=progress)
    match = _NAME_DIGEST.search(osp.basename(urlparse(filename).path))
    if match:
        actual = sha256_of(cached)
        if not actual.startswith(match.group(1)):
            os.remove(cached)  # a bad download must not stay cached
            raise CheckpointError(
                f'{filename}: the downloaded file\'s SHA-256 {actual[:16]}... does not start '
                f'with the digest its name carries ({match.group(1)}); the download is '
                'corrupted or the file was replaced. Removed from the cache; try again or '
                'use another source.')
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
