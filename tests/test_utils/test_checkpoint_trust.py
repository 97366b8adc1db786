"""The paths of a checkpoint that are not pickles: config text never runs (resume, load_from,
the upstream inferencers without a config; local and http), the hash covers the whole file,
forged numpy arrays are refused before anything reads them, and the URL cache is keyed by the
whole URL."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner, load_checkpoint

import mona_mm  # noqa: F401
from mona_mm.utils import (HASH_KEY, WRITER_KEY, CheckpointError, content_hash,
                           load_checkpoint_file, save_checkpoint_file)
from tests.conftest import PY, ROOT
from tests.test_utils.test_checkpoint_io import _flip_tensor_byte, http_dir  # noqa: F401

PAYLOAD = "model = dict(type=__import__('os').system('touch {marker}'))\n"


class TinyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.fc(inputs if torch.is_tensor(inputs) else torch.stack(inputs))
        return dict(loss=out.pow(2).mean()) if mode == 'loss' else out


class Pairs(torch.utils.data.Dataset):

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return dict(inputs=torch.full((2, ), float(i)))


def _runner(work_dir, **kw):
    return Runner(model=TinyModel(), work_dir=str(work_dir),
                  train_dataloader=dict(dataset=Pairs(), sampler=dict(type='DefaultSampler'),
                                        batch_size=2, num_workers=0,
                                        collate_fn=dict(type='default_collate')),
                  optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
                  train_cfg=dict(by_epoch=True, max_epochs=2), default_scope='mmengine',
                  default_hooks=dict(checkpoint=dict(type='mona_mm.SafeCheckpointHook',
                                                     interval=1)), **kw)


@pytest.fixture(scope='module')
def run_checkpoint(tmp_path_factory):
    """A real runner checkpoint (SafeCheckpointHook: hashed) of a 1-epoch run."""
    work = tmp_path_factory.mktemp('run')
    runner = _runner(work, experiment_name='trust_src')
    runner.train_loop._max_epochs = 1
    runner.train()
    return str(work / 'epoch_1.pth')


def _evil_copy(src, dst, marker, where=('meta', 'config')):
    """``src`` with config text that runs ``touch marker``, hash re-stamped so only the
    config text is wrong (an attacker computes the hash as easily as we do)."""
    ckpt = torch.load(src, weights_only=True)
    parent = ckpt
    for key in where[:-1]:
        parent = parent.setdefault(key, {})
    parent[where[-1]] = PAYLOAD.format(marker=marker)
    save_checkpoint_file(ckpt, str(dst))
    return str(dst)


def test_resume_and_load_from_never_run_config_text(run_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / 'owned'
    for where in [('meta', 'config'), ('meta', 'cfg'), ('message_hub', 'runtime_info', 'cfg')]:
        evil = _evil_copy(run_checkpoint, tmp_path / f'evil_{where[-1]}.pth', marker, where)
        with pytest.raises(CheckpointError, match='mmengine would execute it'):
            _runner(tmp_path / 'resume', resume=True, load_from=evil,
                    experiment_name=f'r{len(where)}{where[-1]}').train()
        with pytest.raises(CheckpointError, match='mmengine would execute it'):
            _runner(tmp_path / 'load', load_from=evil,
                    experiment_name=f'l{len(where)}{where[-1]}').train()
    assert not marker.exists()
    # the real checkpoint (mmengine's own config text) still resumes
    _runner(tmp_path / 'ok', resume=True, load_from=run_checkpoint, experiment_name='ok').train()


@pytest.mark.parametrize('scheme', ['local', 'http'])
def test_inferencers_without_config_never_run_config_text(scheme, run_checkpoint, tmp_path,
                                                          http_dir, monkeypatch):  # noqa: F811
    from mmdet.apis import DetInferencer
    from mmseg.apis import MMSegInferencer
    monkeypatch.chdir(tmp_path)
    root, url = http_dir
    marker = tmp_path / 'owned'
    for where in [('meta', 'cfg'), ('message_hub', 'runtime_info', 'cfg')]:
        name = f'evil_{where[0]}.pth'
        _evil_copy(run_checkpoint, root / name, marker, where)
        weights = str(root / name) if scheme == 'local' else f'{url}/{name}'
        for inferencer in (DetInferencer, MMSegInferencer):
            with pytest.raises(CheckpointError, match='mmengine would execute it'):
                inferencer(model=None, weights=weights, device='cpu')
    assert not marker.exists()


def _stamped(tmp_path, meta=None):
    ckpt = {'meta': dict(epoch=3, dataset_meta=dict(classes=('cat', 'dog')), **(meta or {})),
            'message_hub': {'runtime_info': {'epoch': 3}},
            'state_dict': {'weight': torch.arange(64.).reshape(8, 8), 'bias': torch.zeros(8)}}
    path = str(tmp_path / 'c.pth')
    save_checkpoint_file(ckpt, path)
    return path


@pytest.mark.parametrize('edit', ['swap class names', 'edit epoch', 'edit message hub',
                                  'delete hash', 'rename hash', 'delete hash and flip a byte',
                                  'older hash format'])
def test_hash_covers_the_whole_checkpoint(edit, tmp_path):
    path = _stamped(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt['meta'][HASH_KEY] == content_hash(ckpt) and WRITER_KEY in ckpt['meta']
    meta = ckpt['meta']
    if edit == 'swap class names':
        meta['dataset_meta']['classes'] = ('dog', 'cat')
    elif edit == 'edit epoch':
        meta['epoch'] = 30
    elif edit == 'edit message hub':
        ckpt['message_hub']['runtime_info']['epoch'] = 30
    elif edit.startswith('delete hash'):
        del meta[HASH_KEY]
    elif edit == 'rename hash':
        meta['sha256'] = meta.pop(HASH_KEY)
    else:  # what an older mona_mm wrote: a bare hex digest of the tensors only
        meta[HASH_KEY] = meta[HASH_KEY].split(':')[1]
    torch.save(ckpt, path)  # written without re-stamping, as an editor would
    if edit == 'delete hash and flip a byte':
        _flip_tensor_byte(path)
    match = {'delete hash': 'no content hash', 'rename hash': 'no content hash',
             'delete hash and flip a byte': 'no content hash',
             'older hash format': 'older mona_mm'}.get(edit, 'corrupted or was edited')
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint_file(path)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(nn.Linear(8, 8), path)
    # the stamp tool re-stamps a file its owner trusts
    out = subprocess.run([PY, f'{ROOT}/tools/misc/stamp_checkpoint.py', path], cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=300)
    assert out.returncode == 0, out.stdout
    assert load_checkpoint_file(path)['meta'][HASH_KEY].startswith('v2:')


def test_unmarked_checkpoints_with_records_load_with_a_warning(tmp_path):
    from mona_mm.models import PEFTSwinTransformer
    from tests.conftest import NANO, logged_lines
    bb = PEFTSwinTransformer(arch=NANO, peft='Mona')
    torch.save({'state_dict': bb.state_dict()}, tmp_path / 'plain.pth')
    with logged_lines() as lines:
        load_checkpoint_file(str(tmp_path / 'plain.pth'))
    assert any('loaded without verification' in line for line in lines), lines


# ---------------------------------------------------------------------- forged numpy arrays
FORGE = r'''
import io, pickle, sys, zipfile
import numpy as np, torch
def forge(kind, path):
    """Write a checkpoint whose pickle builds the forged array ``kind``."""
    torch.save({'x': np.zeros(1)}, path)  # a real zip checkpoint, then its pickle replaced
    G = lambda mod, name: pickle.GLOBAL + f'{mod}\n{name}\n'.encode()
    ndarray = G('numpy', 'ndarray')
    recon = G('numpy.core.multiarray', '_reconstruct')
    dtype = G('numpy', 'dtype')
    def tup(*items):
        return pickle.MARK + b''.join(items) + pickle.TUPLE
    def b(x):  # bytes pickle (protocol 2) as _codecs.encode(text, 'latin1')
        return G('_codecs', 'encode') + tup(s(x.decode('latin1')), s('latin1')) + pickle.REDUCE
    def s(x):
        data = x.encode('utf-8')
        return pickle.BINUNICODE + len(data).to_bytes(4, 'little') + data
    def i(n):
        return pickle.BININT + n.to_bytes(4, 'little', signed=True)
    def array(dt, raw, shape=1):
        return recon + tup(ndarray, tup(i(0)), b(b'b')) + pickle.REDUCE + \
            tup(i(1), tup(i(shape)), dt, pickle.NEWFALSE, b(raw)) + pickle.BUILD
    # a float64 dtype (its class is on the allow-list, so BUILD may set its state), shared by the
    # array, then given a new state once the array is built: the array's 8 bytes now claim more
    def f8():
        return dtype + tup(s('f8'), pickle.NEWFALSE, pickle.NEWTRUE) + pickle.REDUCE
    state = {  # numpy's dtype state: (version, byteorder, subarray, names, fields, elsize, align, flags)
        'subarray': tup(i(3), s('<'), tup(f8(), tup(i(1 << 20))), pickle.NONE, pickle.NONE,
                        i(8 << 20), i(8), i(0)),  # reads 8 MB past the buffer on .copy()
        'fields': tup(i(3), s('|'), pickle.NONE, tup(s('a')),
                      pickle.EMPTY_DICT + s('a') + tup(f8(), i(0)) + pickle.SETITEM, i(8), i(1),
                      i(16)),
        'refcount-flag': tup(i(3), s('<'), pickle.NONE, pickle.NONE, pickle.NONE, i(-1), i(-1),
                             i(1)),  # "holds object pointers": crashes the process
    }[kind]
    # {'x': array, 'd': the same dtype, re-built} (the unpickler has no POP)
    body = array(f8() + pickle.BINPUT + b'\x00', b'\x00' * 8) + pickle.SETITEM + s('d') + \
        pickle.BINGET + b'\x00' + state + pickle.BUILD
    data = pickle.PROTO + b'\x02' + pickle.EMPTY_DICT + s('x') + body + pickle.SETITEM + pickle.STOP
    src = zipfile.ZipFile(path)
    entries = [(info, src.read(info)) for info in src.infolist()]
    src.close()
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as out:
        for info, content in entries:
            out.writestr(info, data if info.filename.endswith('data.pkl') else content)
import mona_mm
from mona_mm.utils import CheckpointError, load_checkpoint_file
folder = sys.argv[1]
for kind in sys.argv[2:]:  # one process for all: each import of the stack costs seconds
    path = f'{folder}/{kind}.pth'
    forge(kind, path)
    try:
        ckpt = load_checkpoint_file(path)
    except CheckpointError as e:
        print(kind, 'REFUSED', e, flush=True)
    else:
        print(kind, 'LOADED', ckpt['x'].copy().nbytes, flush=True)
'''


def test_forged_numpy_arrays_are_refused(tmp_path):
    kinds = ['subarray', 'fields', 'refcount-flag']
    script = tmp_path / 'forge.py'
    script.write_text(FORGE)
    proc = subprocess.run([PY, str(script), str(tmp_path), *kinds], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]  # no crash (a segfault exits 139)
    verdicts = {line.split()[0]: line for line in proc.stdout.splitlines()
                if line.split()[:1] and line.split()[0] in kinds}
    assert sorted(verdicts) == sorted(kinds), proc.stdout[-3000:]
    for kind, line in verdicts.items():
        assert line.startswith(f'{kind} REFUSED') and 'numpy' in line, line


def test_mmengine_numpy_arrays_still_load(run_checkpoint):
    ckpt = load_checkpoint_file(run_checkpoint)
    arrays = [v for v in ckpt['message_hub']['log_scalars'].values()]
    assert arrays and all(isinstance(a._log_history, np.ndarray) for a in arrays)


# ---------------------------------------------------------------------- URL cache
def test_url_cache_is_keyed_by_the_whole_url(tmp_path, http_dir):  # noqa: F811
    root, url = http_dir
    for sub, value in (('a', 1.), ('b', 2.)):
        (root / sub).mkdir()
        save_checkpoint_file({'state_dict': {'w': torch.full((2, ), value)}},
                             str(root / sub / 'model.pth'))
    assert load_checkpoint_file(f'{url}/a/model.pth')['state_dict']['w'][0] == 1.
    assert load_checkpoint_file(f'{url}/b/model.pth')['state_dict']['w'][0] == 2.


def test_url_digest_in_the_name_is_checked(tmp_path, http_dir):  # noqa: F811
    from mona_mm.utils.pretrained import sha256_of
    root, url = http_dir
    save_checkpoint_file({'state_dict': {'w': torch.ones(2)}}, str(root / 'tmp.pth'))
    digest = sha256_of(str(root / 'tmp.pth'))
    good = f'model_20210928-{digest[:8]}.pth'
    wrong = 'f' if digest[0] != 'f' else 'e'
    bad = f'model_20210928-{wrong}{digest[1:8]}.pth'
    os.link(root / 'tmp.pth', root / good)
    os.link(root / 'tmp.pth', root / bad)
    assert load_checkpoint_file(f'{url}/{good}')['state_dict']['w'].sum() == 2
    with pytest.raises(CheckpointError, match='does not start with the digest'):
        load_checkpoint_file(f'{url}/{bad}')
    # a date is not a digest
    os.link(root / 'tmp.pth', root / 'model-20210928.pth')
    assert load_checkpoint_file(f'{url}/model-20210928.pth')['state_dict']['w'].sum() == 2


# ---------------------------------------------------------------------- leftovers
def test_a_save_removes_temp_files_of_killed_saves(tmp_path):
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    stale = tmp_path / f'.out.pth.tmp-{dead.pid}'
    stale.write_bytes(b'partial')
    live = tmp_path / f'.out.pth.tmp-{os.getppid()}'  # a save in progress elsewhere
    live.write_bytes(b'partial')
    other = tmp_path / f'.other.pth.tmp-{dead.pid}'
    other.write_bytes(b'partial')
    save_checkpoint_file({'state_dict': {'w': torch.ones(1)}}, str(tmp_path / 'out.pth'))
    assert not stale.exists() and live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ['out.pth', live.name, other.name])
