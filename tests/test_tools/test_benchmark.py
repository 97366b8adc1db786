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
                    'mona_reference', 'mona', 'mona_lowmem', 'mona_mimi', '--json', str(out_json)],
                   cwd=tmp_path)
    assert '| mode | trainable |' in out
    data = json.loads(out_json.read_text())
    res = data['results']
    assert set(res) == {'full', 'mona_reference', 'mona', 'mona_lowmem', 'mona_mimi'}
    for r in res.values():
        for key in ('train_ms_fp32', 'train_ms_bf16', 'infer_ms_fp32', 'infer_ms_bf16',
                    'peak_mb_fp32', 'peak_mb_bf16'):
            assert r[key] > 0
    assert res['mona']['trainable'] == res['mona_reference']['trainable']
    # MiMi at ratio 4 keeps a quarter of the neurons: far fewer adapter parameters
    assert res['mona_mimi']['adapter_params'] < res['mona']['adapter_params'] / 3
    assert data['info']['device'].startswith('CPU')
