"""tools/analysis_tools/peft_study.py and mona_mm.study: the smoke preset end to end (per-run
JSON, resume, tables, plot, --from-json, docs blocks), the lr chosen on the validation split
only, the significance rule, shards and run keys."""
import json
import math
import os
import os.path as osp
import re
import shutil
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis_tools'))
import peft_study  # noqa: E402

sys.path.pop(0)

SMOKE = osp.join(ROOT, 'configs', 'study', 'smoke.py')
CPU = osp.join(ROOT, 'configs', 'study', 'cpu.py')


def _record(method, factor, val, test, seed=0, stage='lr'):
    return dict(kind='finetune', stage=stage, backbone='b', task='cls', method=method,
                seed=seed, lr=1e-3 * factor, lr_factor=factor, metric='acc',
                val={'acc': val}, test={'acc': test})


class _NoTest(dict):
    """A run record whose test metrics must not be read."""

    def __getitem__(self, key):
        if key == 'test':
            raise AssertionError('the lr choice read the test split')
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key == 'test':
            raise AssertionError('the lr choice read the test split')
        return super().get(key, default)


def test_lr_choice_reads_the_validation_split_only():
    from mona_mm.study import select_lrs

    # the test split ranks the lrs the opposite way: a choice on test would pick x3
    records = [_record('mona', 1 / 3, val=70, test=90), _record('mona', 1, val=80, test=60),
               _record('mona', 3, val=75, test=99),
               _record('full', 1, val=50, test=10), _record('full', 3, val=40, test=95)]
    chosen = select_lrs(records)
    assert chosen[('b', 'cls', 'mona')]['lr_factor'] == 1
    assert chosen[('b', 'cls', 'full')]['lr_factor'] == 1
    # the same choice when reading the test split would fail
    assert select_lrs([_NoTest(r) for r in records]) == chosen
    # a diverged run (NaN) is never chosen; an incomplete search chooses nothing yet
    nan = [_record('mona', 1, val=float('nan'), test=0), _record('mona', 3, val=1, test=0)]
    assert select_lrs(nan)[('b', 'cls', 'mona')]['lr_factor'] == 3
    assert select_lrs(records, factors=[1 / 3, 1, 3]).keys() == {('b', 'cls', 'mona')}
    # further-seed runs do not take part
    seeds = records + [_record('mona', 3, val=100, test=0, seed=1, stage='seed')]
    assert select_lrs(seeds)[('b', 'cls', 'mona')]['lr_factor'] == 1


def test_significance_rule_and_rows():
    from mona_mm.study import significant, summarize
    assert significant(80.0, 1.0, 3, 70.0, 1.0, 3) is True
    assert significant(71.0, 1.0, 3, 70.0, 1.0, 3) is False  # 1 < 2 * sqrt(2/3)
    assert significant(90.0, 1.0, 1, 70.0, 1.0, 3) is None  # one seed: no noise estimate
    records = [_record('full', 1, 50, t, seed=s, stage='lr' if s == 0 else 'seed')
               for s, t in enumerate((60, 61, 62))]
    records += [_record('mona', 1, 50, t, seed=s, stage='lr' if s == 0 else 'seed')
                for s, t in enumerate((70, 71, 72))]
    for r in records:
        r.update(params=dict(trainable=10, total=100, backbone_trainable=5, backbone_total=90),
                 time=dict(s_per_iter=0.1), memory=dict(mb=1.0, kind='counted'))
    chosen = {('b', 'cls', m): dict(lr=1e-3, lr_factor=1) for m in ('full', 'mona')}
    rows = {r.method: r for r in summarize(records, chosen, [0, 1, 2])}
    assert rows['mona'].n == 3 and rows['mona'].mean == 71 and rows['mona'].std == 1
    assert rows['mona'].delta == 10 and rows['mona'].significant is True
    assert rows['full'].delta is None


def test_shards_partition_the_grid_and_bad_input_is_named():
    from mona_mm.study import in_shard, load_spec, parse_only, parse_shard
    spec = load_spec(CPU, root=ROOT)
    slots = spec.slots()
    # 2 backbones x 3 tasks x 12 methods, 3 lrs + 2 further seeds each
    assert len(slots) == 2 * 3 * 12 * 5
    assert all(s.stage == 'lr' for s in slots[:216]) and all(s.stage == 'seed'
                                                            for s in slots[216:])
    parts = [[s for s in slots if in_shard(s, (i, 3))] for i in range(3)]
    assert sorted(s.index for p in parts for s in p) == list(range(len(slots)))
    for bad in ('3/3', '1', 'a/b'):
        with pytest.raises(ValueError, match='--shard'):
            parse_shard(bad)
    with pytest.raises(ValueError, match='--only'):
        parse_only(['lr=1'])
    from mona_mm.study import parse_spec
    with pytest.raises(ValueError, match='lr_factors'):
        parse_spec(dict(methods=['mona'], lr_factors=[0.5, 2], seeds=[0]), 'x.py', ROOT)
    with pytest.raises(ValueError, match='unknown'):
        parse_spec(dict(methods=['vpt'], lr_factors=[1], seeds=[0]), 'x.py', ROOT)


def _results(work):
    d = osp.join(work, 'results')
    return {f: os.stat(osp.join(d, f)).st_mtime_ns for f in os.listdir(d)}


def test_smoke_study_end_to_end(tmp_path, capsys):
    work, data = str(tmp_path / 'study'), str(tmp_path / 'data')
    argv = [SMOKE, '--work-dir', work, '--data-root', data]
    assert peft_study.main(argv) == 0
    out = capsys.readouterr().out
    assert 'ETA' in out and '7 run(s) trained this time' in out
    # one JSON per run: 2 methods x 2 lrs at seed 0, then seed 1 at the chosen lr
    first = _results(work)
    records = [json.load(open(osp.join(work, 'results', f))) for f in first]
    assert len(records) == 6
    pre = [f for f in os.listdir(osp.join(work, 'pretrain'))]
    assert sorted(p.rsplit('.', 1)[1] for p in pre) == ['json', 'pth']
    pre_path = osp.join(work, 'pretrain', next(p for p in pre if p.endswith('.pth')))
    for r in records:
        assert set(r['val']) >= {'accuracy/top1'} and set(r['test']) >= {'accuracy/top1'}
        assert r['params']['backbone_total'] > 0 and r['time']['s_per_iter'] > 0
        assert r['memory']['mb'] > 0 and r['versions']['mmengine'] and r['config']
        assert r['splits']['val'] != r['splits']['test']
        # every run started from the cached source-task pretraining
        assert osp.samefile(r['backbone_weights'], pre_path)
        assert r['key'] + '.json' in first
    # the lr of the further seed is the lr-search run with the best *validation* metric
    for m in ('full', 'mona'):
        search = [r for r in records if r['method'] == m and r['stage'] == 'lr']
        best = max(search, key=lambda r: (r['val']['accuracy/top1'], -abs(math.log(
            r['lr_factor'])), -r['lr']))
        (seed1, ) = [r for r in records if r['method'] == m and r['stage'] == 'seed']
        assert seed1['seed'] == 1 and seed1['lr'] == best['lr']
    tables = open(osp.join(work, 'tables.md')).read()
    assert '| swin-nano | full |' in tables and '| swin-nano | mona |' in tables
    assert os.path.getsize(osp.join(work, 'plot.png')) > 1000
    merged = json.load(open(osp.join(work, 'study.json')))
    assert len(merged['records']) == 7 and merged['study']['seeds'] == [0, 1]

    # resume: nothing left to train, no JSON rewritten
    assert peft_study.main(argv) == 0
    assert '0 run(s) trained this time' in capsys.readouterr().out
    assert _results(work) == first
    # an interrupted study reruns only what has no JSON
    lost = next(r for r in records if r['stage'] == 'seed')
    os.remove(osp.join(work, 'results', lost['key'] + '.json'))
    assert peft_study.main(argv) == 0
    assert '1 run(s) trained this time' in capsys.readouterr().out
    assert set(_results(work)) == set(first)

    # --from-json: the same tables and a plot, no config, no training; docs blocks filled
    docs, readme = tmp_path / 'study.md', tmp_path / 'README.md'
    shutil.copy(osp.join(ROOT, 'docs', 'study.md'), docs)
    shutil.copy(osp.join(ROOT, 'README.md'), readme)
    again = tmp_path / 'again'
    assert peft_study.main(['--from-json', osp.join(work, 'study.json'), '--out-dir',
                            str(again), '--update-docs', str(docs), str(readme)]) == 0
    assert (again / 'tables.md').read_text() == open(osp.join(work, 'tables.md')).read()
    assert (again / 'plot.png').stat().st_size > 1000
    text = docs.read_text()
    assert '| swin-nano | mona |' in text and '](again/plot.png)' in text
    # the headline table (a row per method, a column per backbone and task), in both files
    head = '| method | swin-nano cls | trained (swin-nano) |\n|---|---:|---:|\n| full | '
    assert head in text and head in readme.read_text()
    assert re.search(r'\n\| mona \| [0-9.]+ ± [0-9.]+\*? \| [0-9.]+ % \|\n', text)


def test_run_key_follows_the_config_not_the_folder(tmp_path):
    from mona_mm.study import Study, load_spec
    spec = load_spec(SMOKE, root=ROOT)
    slot = spec.slots()[0]
    a = Study(spec, str(tmp_path / 'a'), data_root=str(tmp_path / 'd1')).plan(slot, 1.0)
    b = Study(spec, str(tmp_path / 'b'), data_root=str(tmp_path / 'd2')).plan(slot, 1.0)
    assert a.key == b.key  # the same run on another machine or folder
    assert Study(spec, str(tmp_path / 'a')).plan(slot, 3.0).key != a.key
    spec.tasks['cls']['iters'] += 1
    assert Study(spec, str(tmp_path / 'a')).plan(slot, 1.0).key != a.key


# the smoke study trains the two Swin classification configs end to end
STUDY_CONFIGS = sorted(f for f in os.listdir(osp.join(ROOT, 'configs', 'study', '_base_'))
                       if f.endswith('.py') and not f.startswith('swin-nano_'))


@pytest.fixture(scope='module')
def study_data(tmp_path_factory):
    from mona_mm.datasets import generate_study_shapes
    root = tmp_path_factory.mktemp('study_data')
    generate_study_shapes(str(root), source_per_class=1, source_val_per_class=1, shots=1,
                          cls_val_per_class=1, cls_test_per_class=1, train_scenes=2,
                          val_scenes=1, test_scenes=1)
    return str(root)


@pytest.mark.parametrize('name', STUDY_CONFIGS)
def test_study_config_trains_one_step(name, study_data):
    """Every other config the study trains builds, reads each split of the study data, and
    one step through its own train pipeline reaches what its method trains (the
    pretraining: the whole backbone; the tasks' default, Mona: the adapters only)."""
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DATASETS, DefaultScope

    from mona_mm.study.execute import _with_data_root
    from mona_mm.utils import build_model_from_cfg
    cfg = _with_data_root(Config.fromfile(osp.join(ROOT, 'configs', 'study', '_base_', name)),
                          study_data)
    model = build_model_from_cfg(cfg).train()
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        for split in ('val', 'test'):
            assert len(DATASETS.build(cfg[f'{split}_dataloader'].dataset)) >= 1, split
        train = DATASETS.build(cfg.train_dataloader.dataset)
        batch = pseudo_collate([train[0], train[len(train) - 1]])
    loss, _ = model.parse_losses(model(**model.data_preprocessor(batch, True), mode='loss'))
    loss.backward()
    params = dict(model.backbone.named_parameters())
    if cfg.model.backbone.peft['type'] == 'Full':  # the source-task pretraining
        assert all(p.requires_grad and p.grad is not None for p in params.values())
    else:
        adapters = [p for n, p in params.items() if '.adapters.' in n]
        assert adapters and all(p.requires_grad and p.grad is not None for p in adapters)
        assert not any(p.requires_grad for n, p in params.items() if '.adapters.' not in n)


def test_committed_study_docs_regenerate_from_the_committed_json(tmp_path, monkeypatch):
    # docs/study.md's and the README's generated blocks are exactly what the committed merged
    # JSON gives (`--from-json docs/study/cpu.json --out-dir docs/study --update-docs
    # docs/study.md README.md`), and that JSON holds the whole grid with 3 seeds per row
    merged = json.load(open(osp.join(ROOT, 'docs', 'study', 'cpu.json')))
    runs = [r for r in merged['records'] if r.get('kind', 'finetune') == 'finetune']
    assert len(runs) == 360 and merged['study']['seeds'] == [0, 1, 2]
    (tmp_path / 'docs').mkdir()
    docs, readme = tmp_path / 'docs' / 'study.md', tmp_path / 'README.md'
    shutil.copy(osp.join(ROOT, 'docs', 'study.md'), docs)
    shutil.copy(osp.join(ROOT, 'README.md'), readme)
    monkeypatch.chdir(ROOT)  # the captions name the JSON as given: the repository's path
    assert peft_study.main(['--from-json', 'docs/study/cpu.json',
                            '--out-dir', str(tmp_path / 'docs' / 'study'), '--update-docs',
                            str(docs), str(readme)]) == 0
    assert docs.read_text() == open(osp.join(ROOT, 'docs', 'study.md')).read()
    assert readme.read_text() == open(osp.join(ROOT, 'README.md')).read()
    tables = (tmp_path / 'docs' / 'study' / 'tables.md').read_text()
    assert tables == open(osp.join(ROOT, 'docs', 'study', 'tables.md')).read()
    assert tables.count('(n=3)') == 12 * 6  # every method, every cell, 3 seeds
