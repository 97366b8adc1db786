"""A small-size run of the PEFT benchmark: it produces the table and the JSON (no timing
assertions; timings belong to docs/benchmarks.md), takes method slugs or registered types as
modes, and prints the tables of docs/benchmarks.md again from their JSON files."""
import argparse
import glob
import importlib.util
import json
import os.path as osp
import re

import pytest

from tests.conftest import PY, ROOT, run_tool

BENCH = osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark_peft.py')


def _bench_module():
    spec = importlib.util.spec_from_file_location('_mona_benchmark_peft', BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_small_run(tmp_path):
    out_json = tmp_path / 'bench.json'
    out = run_tool([PY, osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark_peft.py'),
                    '--arch', '32,1,1,1,1,1,2,4,8', '--size', '64', '64', '--batch', '1',
                    '--iters', '2', '--warmup', '1', '--dtype', 'fp32', 'bf16', '--modes', 'full',
                    'MonaReference', 'mona', 'mona_mimi', '--json', str(out_json)],
                   cwd=tmp_path)
    assert '| mode | trainable |' in out
    data = json.loads(out_json.read_text())
    res = data['results']
    # a registered type and the earlier underscore spelling are read as today's modes
    assert list(res) == ['full', 'mona-reference', 'mona', 'mona-mimi']
    for r in res.values():
        for key in ('train_ms_fp32', 'train_ms_bf16', 'infer_ms_fp32', 'infer_ms_bf16',
                    'peak_mb_fp32', 'peak_mb_bf16'):
            assert r[key] > 0
    assert res['mona']['trainable'] == res['mona-reference']['trainable']
    # MiMi at ratio 4 keeps a quarter of the neurons: far fewer adapter parameters
    assert res['mona-mimi']['adapter_params'] < res['mona']['adapter_params'] / 3
    assert data['info']['device'].startswith('CPU')
    # the JSON prints the same table again
    again = run_tool([PY, BENCH, '--from-json', str(out_json)], cwd=tmp_path)
    assert again.strip() in out


def test_benchmark_count_memory(tmp_path):
    """--count-memory: device-independent byte counts, one process, ratios to full."""
    out_json = tmp_path / 'mem.json'
    out = run_tool([PY, osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark_peft.py'),
                    '--arch', '32,1,1,2,1,1,2,4,8', '--size', '64', '64', '--batch', '2',
                    '--dtype', 'fp32', 'bf16', '--count-memory', '--modes', 'full',
                    'mona-reference', 'mona', 'mona-lowmem', 'floor', '--json', str(out_json)],
                   cwd=tmp_path)
    assert '| mode | trainable | weights+grads+AdamW MB |' in out
    res = json.loads(out_json.read_text())['results']
    for d in ('fp32', 'bf16'):
        saved = {m: r[f'saved_mb_{d}'] for m, r in res.items()}
        # recomputing the adapters keeps less than the fused Mona, which keeps less than
        # the straightforward one; so does the frozen floor (one-neuron adapters)
        assert saved['mona-lowmem'] < saved['mona'] < saved['mona-reference']
        assert saved['floor'] < saved['mona']
        assert res['mona'][f'total_mb_{d}'] < res['full'][f'total_mb_{d}']


def test_benchmark_runs_on_a_vit(tmp_path):
    """The benchmark is generic: the same modes on mmpretrain's ViT (counted memory: one
    process)."""
    out_json = tmp_path / 'vit.json'
    run_tool([PY, osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark_peft.py'),
              '--backbone', 'vit', '--arch', '32,2,2,64', '--size', '64', '64', '--batch', '1',
              '--count-memory', '--modes', 'full', 'mona', 'mona-lowmem', 'mona-mimi',
              '--json', str(out_json)], cwd=tmp_path)
    data = json.loads(out_json.read_text())
    res = data['results']
    assert data['info']['backbone'] == 'vit'
    assert res['mona']['adapter_params'] == 4 * (133 * 32 + 9728)
    assert res['mona-mimi']['adapter_params'] < res['mona']['adapter_params'] / 3
    assert res['mona']['trainable'] == res['mona']['adapter_params']  # only the adapters
    assert res['mona-lowmem']['saved_mb_fp32'] < res['mona']['saved_mb_fp32']


def test_modes_are_method_slugs():
    bench = _bench_module()
    assert bench.mode_name('norm-tuning') == 'norm-tuning'
    assert bench.mode_name('NormTuning') == 'norm-tuning'
    assert bench.mode_name('Partial') == 'partial-1'
    assert bench.mode_name('partial-2') == 'partial-2'  # any method slug
    assert bench.mode_name('mona_mimi_lowmem') == 'mona-mimi-lowmem'
    assert bench.MODES['partial-1'] == dict(type='Partial', num_blocks=1)
    with pytest.raises(argparse.ArgumentTypeError, match="unknown mode 'monaa'; modes: full, "):
        bench.mode_name('monaa')


@pytest.mark.parametrize('path', sorted(glob.glob(osp.join(ROOT, 'docs', 'bench_*.json')) +
                                        glob.glob(osp.join(ROOT, 'docs', 'memory_*.json'))),
                         ids=osp.basename)
def test_docs_tables_are_their_json_files(path):
    """Every table of docs/benchmarks.md is what --from-json prints from its file."""
    with open(path) as f:
        results = json.load(f)['results']
    assert all(re.fullmatch(r'[a-z0-9-]+', mode) for mode in results)  # today's spelling
    rendered = _bench_module().render(path)
    with open(osp.join(ROOT, 'docs', 'benchmarks.md')) as f:
        assert rendered in f.read()
