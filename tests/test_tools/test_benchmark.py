"""A small-size run of the PEFT benchmark: it produces the table and the JSON (no timing
assertions; timings belong to docs/benchmarks.md)."""
import json
import os.path as osp

from tests.conftest import PY, ROOT, run_tool


def test_benchmark_small_run(tmp_path):
    out_json = tmp_path / 'bench.json'
    out = run_tool([PY, osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark_peft.py'),
                    '--arch', '32,1,1,1,1,1,2,4,8', '--size', '64', '64', '--batch', '1',
                    '--iters', '2', '--warmup', '1', '--dtype', 'fp32', 'bf16', '--modes', 'full',
                    'mona_reference', 'mona', 'mona_mimi', '--json', str(out_json)],
                   cwd=tmp_path)
    assert '| mode | trainable |' in out
    data = json.loads(out_json.read_text())
    res = data['results']
    assert set(res) == {'full', 'mona_reference', 'mona', 'mona_mimi'}
    for r in res.values():
        for key in ('train_ms_fp32', 'train_ms_bf16', 'infer_ms_fp32', 'infer_ms_bf16',
                    'peak_mb_fp32', 'peak_mb_bf16'):
            assert r[key] > 0
    assert res['mona']['trainable'] == res['mona_reference']['trainable']
    # MiMi at ratio 4 keeps a quarter of the neurons: far fewer adapter parameters
    assert res['mona_mimi']['adapter_params'] < res['mona']['adapter_params'] / 3
    assert data['info']['device'].startswith('CPU')


def test_benchmark_count_memory(tmp_path):
    """--count-memory: device-independent byte counts, one process, ratios to full."""
    out_json = tmp_path / 'mem.json'
    out = run_tool([PY, osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark_peft.py'),
                    '--arch', '32,1,1,2,1,1,2,4,8', '--size', '64', '64', '--batch', '2',
                    '--dtype', 'fp32', 'bf16', '--count-memory', '--modes', 'full',
                    'mona_reference', 'mona', 'mona_lowmem', 'floor', '--json', str(out_json)],
                   cwd=tmp_path)
    assert '| mode | trainable | weights+grads+AdamW MB |' in out
    res = json.loads(out_json.read_text())['results']
    for d in ('fp32', 'bf16'):
        saved = {m: r[f'saved_mb_{d}'] for m, r in res.items()}
        # recomputing the adapters keeps less than the fused Mona, which keeps less than
        # the straightforward one; so does the frozen floor (one-neuron adapters)
        assert saved['mona_lowmem'] < saved['mona'] < saved['mona_reference']
        assert saved['floor'] < saved['mona']
        assert res['mona'][f'total_mb_{d}'] < res['full'][f'total_mb_{d}']


def test_benchmark_runs_on_a_vit(tmp_path):
    """The benchmark is generic: the same modes on mmpretrain's ViT (counted memory: one
    process)."""
    out_json = tmp_path / 'vit.json'
    run_tool([PY, osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark_peft.py'),
              '--backbone', 'vit', '--arch', '32,2,2,64', '--size', '64', '64', '--batch', '1',
              '--count-memory', '--modes', 'full', 'mona', 'mona_lowmem', 'mona_mimi',
              '--json', str(out_json)], cwd=tmp_path)
    data = json.loads(out_json.read_text())
    res = data['results']
    assert data['info']['backbone'] == 'vit'
    assert res['mona']['adapter_params'] == 4 * (133 * 32 + 9728)
    assert res['mona_mimi']['adapter_params'] < res['mona']['adapter_params'] / 3
    assert res['mona']['trainable'] == res['mona']['adapter_params']  # only the adapters
    assert res['mona_lowmem']['saved_mb_fp32'] < res['mona']['saved_mb_fp32']
