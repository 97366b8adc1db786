import logging
import os
import os.path as osp
import subprocess
import sys
from contextlib import contextmanager

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
NANO = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))


@pytest.fixture(scope='session')
def shapes_workspace(tmp_path_factory):
    """A folder with ``data/shapes`` (small generated dataset) to run configs from."""
    from mona_mm.datasets import generate_shapes
    ws = tmp_path_factory.mktemp('ws')
    generate_shapes(str(ws / 'data' / 'shapes'), num_train=8, num_val=4, num_cls_per_class=8,
                    seed=1)
    write_demo_pretrained(ws)
    return ws


def write_demo_pretrained(ws) -> None:
    """The pretrained backbones the demo's adapter configs read, where the demo writes them
    (work_dirs/demo/pretrain{,_vit,_swinv2,_resnet,_mit,_sam}/epoch_20.pth, relative to the working
    directory): Full models of the pretraining configs, randomly initialised."""
    import torch
    from mmengine.config import Config
    from mona_mm.utils import build_model_from_cfg, save_checkpoint_file
    for config, folder in (('swin-nano_1xb32-20e_shapes-cls.py', 'pretrain'),
                           ('vit-nano_1xb32-20e_shapes-cls.py', 'pretrain_vit'),
                           ('swinv2-nano_1xb32-20e_shapes-cls.py', 'pretrain_swinv2'),
                           ('resnet18_1xb32-20e_shapes-cls.py', 'pretrain_resnet'),
                           ('mit-nano_1xb32-20e_shapes-cls.py', 'pretrain_mit'),
                           ('sam-nano_1xb32-20e_shapes-cls.py', 'pretrain_sam')):
        torch.manual_seed(0)
        model = build_model_from_cfg(Config.fromfile(osp.join(ROOT, 'configs', 'demo', config)))
        path = ws / 'work_dirs' / 'demo' / folder / 'epoch_20.pth'
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint_file({'state_dict': model.state_dict(), 'meta': {}}, str(path))


def run_tool(args, cwd, timeout=900, env=None):
    """Run a command with the project's interpreter; return stdout+stderr, fail loudly."""
    full_env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
                    OMP_NUM_THREADS='1', **(env or {}))
    proc = subprocess.run(args, cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f'{args} exited {proc.returncode}:\n{proc.stdout[-6000:]}')
    return proc.stdout


PY = sys.executable


@contextmanager
def logged_lines(level: int = logging.DEBUG):
    """Messages the current MMLogger emits at ``level`` or above inside the block."""
    from mmengine.logging import MMLogger
    lines = []

    class Keep(logging.Handler):

        def emit(self, record):
            if record.levelno >= level:
                lines.append(record.getMessage())

    logger = MMLogger.get_current_instance()
    keep = Keep()
    logger.addHandler(keep)
    try:
        yield lines
    finally:
        logger.removeHandler(keep)


def _rss_mb() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


# Big models (Swin-L, BEiT) sit in reference cycles that Python's collector reaches late, and
# the allocator keeps freed pages: two xdist workers then grew past this machine's 24 GiB.
# A full collection costs ~0.2 s, so it runs only once a worker holds more than this.
_COLLECT_ABOVE_MB = float(os.environ.get('MONA_MM_TEST_COLLECT_MB', 2500))


@pytest.fixture(autouse=True)
def _bounded_memory(request):
    """Collect and return freed memory to the OS after a test that left the worker big; with
    MONA_MM_RSS_LOG=<file>, append each test's resident memory (MiB) to that file."""
    yield
    if _rss_mb() > _COLLECT_ABOVE_MB:
        import ctypes
        import gc
        gc.collect()
        try:
            ctypes.CDLL('libc.so.6').malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass
    log = os.environ.get('MONA_MM_RSS_LOG')
    if log:
        worker = os.environ.get('PYTEST_XDIST_WORKER', 'main')
        with open(log, 'a') as f:
            f.write(f'{worker}\t{_rss_mb():.0f}\t{request.node.nodeid}\n')
