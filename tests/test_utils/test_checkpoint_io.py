"""Every checkpoint load is weights_only (URLs included), writes are atomic with a content hash
that loading verifies, and unusable files get an error that says what is wrong."""
import os
import socket
import subprocess
import sys
import time
import zipfile

import pytest
import torch
import torch.nn as nn
from mmengine.runner import CheckpointLoader, load_checkpoint

import mona_mm  # noqa: F401  (registers the schemes)
from mona_mm.utils import (HASH_KEY, CheckpointError, content_hash, load_checkpoint_file,
                           save_checkpoint_file)
from tests.conftest import NANO


class Payload:
    """Unpickling this creates ``marker`` (stands for arbitrary code)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


@pytest.fixture
def http_dir(tmp_path, monkeypatch):
    """A folder served on 127.0.0.1 by a bounded http.server subprocess, stopped by PID."""
    root = tmp_path / 'www'
    root.mkdir()
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))  # download cache
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, '-m', 'http.server', str(port), '--bind',
                             '127.0.0.1', '--directory', str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(('127.0.0.1', port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError('http.server did not start')
                time.sleep(0.1)
        yield root, f'http://127.0.0.1:{port}'
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_url_checkpoint_never_runs_pickled_code(tmp_path, http_dir):
    root, url = http_dir
    marker = tmp_path / 'owned'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'x': Payload(str(marker))},
               root / 'evil.pth')
    torch.save({'state_dict': {'weight': torch.ones(2, 2), 'bias': torch.zeros(2)}},
               root / 'good.pth')
    # every path a checkpoint URL takes: mmengine's loader (load_from, --resume, inferencers)
    with pytest.raises(CheckpointError, match='refusing to load'):
        CheckpointLoader.load_checkpoint(f'{url}/evil.pth')
    with pytest.raises(CheckpointError, match='refusing to load'):
        load_checkpoint(nn.Linear(2, 2), f'{url}/evil.pth')
    # ... and a backbone's init_cfg
    from mona_mm.models import PEFTSwinTransformer
    bb = PEFTSwinTransformer(arch=NANO, peft='Mona', init_cfg=dict(
        type='Pretrained', checkpoint=f'{url}/evil.pth'))
    with pytest.raises(CheckpointError, match='refusing to load'):
        bb.init_weights()
    assert not marker.exists()
    # a plain checkpoint at a URL still loads
    lin = nn.Linear(2, 2)
    load_checkpoint(lin, f'{url}/good.pth')
    assert torch.equal(lin.weight, torch.ones(2, 2))
    # and so do the local ones (the same refusal)
    torch.save({'x': Payload(str(marker))}, tmp_path / 'evil_local.pth')
    with pytest.raises(CheckpointError, match='refusing to load'):
        load_checkpoint_file(str(tmp_path / 'evil_local.pth'))
    assert not marker.exists()


def _flip_tensor_byte(path):
    """Flip one byte inside the first stored tensor's data (the zip stores it raw)."""
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if '/data/' in i.filename and i.file_size > 0)
    with open(path, 'r+b') as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(f.read(2), 'little') for _ in range(2))
        offset = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ 0x10]))


def test_content_hash_detects_a_flipped_byte(tmp_path):
    ckpt = {'meta': {'dataset_meta': {'classes': ['a']}},
            'state_dict': {'weight': torch.arange(64.).reshape(8, 8), 'bias': torch.zeros(8)}}
    path = str(tmp_path / 'c.pth')
    digest = save_checkpoint_file(ckpt, path)
    loaded = load_checkpoint_file(path)
    assert loaded['meta'][HASH_KEY] == digest == content_hash(loaded)
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]
    _flip_tensor_byte(path)
    assert not torch.equal(torch.load(path, weights_only=True)['state_dict']['weight'],
                           ckpt['state_dict']['weight'])  # torch itself does not notice
    with pytest.raises(CheckpointError, match='corrupted'):
        load_checkpoint_file(path)
    with pytest.raises(CheckpointError, match='corrupted'):
        load_checkpoint(nn.Linear(8, 8), path)


def test_unusable_files_say_what_is_wrong(tmp_path):
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    with pytest.raises(CheckpointError, match=r'empty \(0 bytes\)'):
        load_checkpoint_file(str(empty))
    noise = tmp_path / 'noise.pth'
    noise.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match='is not a torch checkpoint') as e:
        load_checkpoint_file(str(noise))
    assert 'weights_only=False' not in str(e.value)
    good = tmp_path / 'good.pth'
    save_checkpoint_file({'state_dict': {'w': torch.ones(3)}}, str(good))
    data = good.read_bytes()
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='not a readable torch checkpoint'):
        load_checkpoint_file(str(truncated))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_checkpoint_file(str(tmp_path / 'missing.pth'))


def test_training_checkpoints_carry_a_hash_that_resume_verifies(tmp_path):
    from tests.test_engine.test_mimi_pruning_hook import _hook, _runner
    safe = dict(type='mona_mm.SafeCheckpointHook', interval=1, max_keep_ckpts=1)
    _runner(tmp_path, _hook(), max_epochs=1, checkpoint=safe, name='h1').train()
    path = tmp_path / 'epoch_1.pth'
    ckpt = torch.load(path, weights_only=True)
    assert ckpt['meta'][HASH_KEY] == content_hash(ckpt)
    _flip_tensor_byte(str(path))
    resumed = _runner(tmp_path, _hook(), max_epochs=2, resume=True, checkpoint=safe, name='h2')
    with pytest.raises(CheckpointError, match='corrupted'):
        resumed.train()
