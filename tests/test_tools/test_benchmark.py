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
                    'MonaReference', 'mona', 'mona_mimi', '--json', str(out_json), '--profile'],
                   cwd=tmp_path)
    assert '| mode | trainable |' in out
    # --profile: an operator table of one train step and one inference call per mode
    for mode in ('full', 'mona-reference', 'mona', 'mona-mimi'):
        for title in (mode, f'{mode}, inference'):
            table = out.split(f'[profile {title}]\n', 1)[1]
            assert 'Self CPU' in table.split('\n', 2)[1]
            by_shape = out.split(f'[profile {title}, by input shape]\n', 1)[1]
            assert 'Input Shapes' in by_shape.split('\n', 2)[1]
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


def test_interrupted_run_resumes_from_its_partial_json(tmp_path):
    """The JSON is rewritten after every mode; --resume measures only the modes it lacks and
    refuses a file of another measurement."""
    out_json = tmp_path / 'b.json'
    base = [PY, BENCH, '--arch', '32,1,1,1,1,1,2,4,8', '--size', '32', '32', '--batch', '1',
            '--count-memory', '--json', str(out_json)]
    run_tool(base + ['--modes', 'full', 'mona'], cwd=tmp_path)
    data = json.loads(out_json.read_text())
    data['results'].pop('mona')  # as an interrupted 3-mode run leaves it
    data['results']['full']['marker'] = 1
    data['partial'] = dict(remaining=['mona', 'lora'])
    out_json.write_text(json.dumps(data))
    assert 'still to measure mona, lora' in _bench_module().render(str(out_json))
    out = run_tool(base + ['--modes', 'full', 'mona', 'lora', '--resume'], cwd=tmp_path)
    assert 'full: kept from' in out and '[benchmark] mona (1/1)' in out
    data = json.loads(out_json.read_text())
    assert list(data['results']) == ['full', 'mona', 'lora'] and 'partial' not in data
    assert data['results']['full']['marker'] == 1  # kept, not measured again
    with pytest.raises(AssertionError, match='holds another measurement .*size'):
        run_tool([a if a != '32' else '64' for a in base] + ['--modes', 'full', '--resume'],
                 cwd=tmp_path)


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


def test_benchmark_compile_side_by_side(tmp_path):
    """--compile: every mode eager and compiled in one process, with compile times, the goal
    ratios of the same run, and whole graphs (zero graph breaks in the forward + backward and
    the inference of the adapter methods). aot_eager traces the graphs and the backward
    exactly as inductor would see them, without generating code, to stay fast."""
    out_json = tmp_path / 'compiled.json'
    modes = ['full', 'mona', 'lora']
    out = run_tool([PY, BENCH, '--backbone', 'vit', '--arch', '32,1,1,64', '--size', '32', '32',
                    '--batch', '1', '--iters', '2', '--warmup', '1', '--dtype', 'fp32',
                    '--device', 'cpu', '--compile', '--compile-backend', 'aot_eager',
                    '--modes', *modes, '--json', str(out_json), '--profile'], cwd=tmp_path)
    data = json.loads(out_json.read_text())
    res, ratios = data['results'], data['ratios']['fp32']
    for mode in modes:  # --profile: train step and inference, eager and compiled
        for title in ('eager', 'compiled', 'inference, eager', 'inference, compiled'):
            assert f'[profile {mode}, {title}]\n' in out, (mode, title)
    assert data['info']['compile'] == 'aot_eager'
    assert list(res) == modes
    for mode, r in res.items():
        for kind in ('train', 'infer'):
            # eager and compiled of the same mode, both measured, compile time apart
            assert r[f'{kind}_ms_fp32'] > 0 and r[f'{kind}_ms_fp32_compiled'] > 0
            assert r[f'compile_s_{kind}_fp32'] > 0 and r[f'compile_calls_{kind}_fp32'] >= 1
            assert r[f'recompiles_after_warm_{kind}_fp32'] == 0, mode  # timed warm graphs
            assert ratios['compiled_x_eager'][mode][kind] == pytest.approx(
                r[f'{kind}_ms_fp32_compiled'] / r[f'{kind}_ms_fp32'])
        # one whole graph for the forward (its backward with it) and one for the inference
        assert (r['graphs_train_fp32'], r['graph_breaks_train_fp32']) == (1, 0), mode
        assert (r['graphs_infer_fp32'], r['graph_breaks_infer_fp32']) == (1, 0), mode
        assert 'graph_break_reasons' not in r or not r['graph_break_reasons'], mode
        assert r['alloc_mb_train_fp32'] > 0 and r['alloc_mb_train_fp32_compiled'] > 0
    assert ratios['mona_train_x_full_compiled'] == pytest.approx(
        res['mona']['train_ms_fp32_compiled'] / res['full']['train_ms_fp32_compiled'])
    assert ratios['plain'] == 'full'  # no fixed here: full is the same network at inference
    assert ratios['mona_infer_x_plain_compiled'] == pytest.approx(
        res['mona']['infer_ms_fp32_compiled'] / res['full']['infer_ms_fp32_compiled'])
    assert ratios['goals'] == dict(mona_train_x_full=0.80, mona_infer_x_plain=1.05)
    assert '| mode | trainable | train ms eager | train ms compiled |' in out
    assert 'fp32: mona train step / full train step: compiled ' in out
    # the JSON prints the same tables and ratios again
    assert _bench_module().render(str(out_json)).strip() in out


def test_benchmark_compile_refuses_counted_memory(capsys):
    """Counted memory reads autograd's saved-tensor hooks, which a compiled graph bypasses:
    --compile with --count-memory is one clear error, not a wrong number."""
    bench = _bench_module()
    with pytest.raises(SystemExit):
        bench.parse_args(['--compile', '--count-memory'])
    assert 'run --count-memory without it' in capsys.readouterr().err
    assert bench.parse_args(['--compile', '--profile']).compile
    assert not bench.parse_args([]).compile  # eager-only unless asked


def test_compile_report_keeps_a_failed_compile_as_a_result():
    """A mode whose compiled side failed to compile is a row with its eager numbers,
    'failed' compiled cells and the error below the table; its ratios are left out."""
    bench = _bench_module()

    def row(train, infer, compiled=True):
        r = dict(trainable=10, train_ms_fp32=train, infer_ms_fp32=infer,
                 alloc_mb_train_fp32=5.0, graph_breaks_infer_fp32=0,
                 infer_ms_fp32_compiled=infer / 2, compile_s_infer_fp32=1.0)
        if compiled:
            r.update(train_ms_fp32_compiled=train / 2, compile_s_train_fp32=3.0,
                     alloc_mb_train_fp32_compiled=4.0, graph_breaks_train_fp32=0,
                     graph_breaks_optimizer_fp32=2)
        else:
            r['compile_error_train_fp32'] = 'AssertionError: Node add_17 was invalid'
        return r

    results = {'full': row(100.0, 40.0), 'mona-lowmem': row(90.0, 44.0, compiled=False),
               'mona': row(80.0, 44.0)}
    ratios = bench.compile_ratios(results, ['fp32'])['fp32']
    assert ratios['mona_train_x_full_compiled'] == pytest.approx(0.8)
    assert ratios['mona_infer_x_plain_compiled'] == pytest.approx(1.1)
    assert ratios['compiled_x_eager']['mona-lowmem'] == dict(infer=0.5)  # train failed
    text = bench.compile_report(results, ['fp32'])
    lowmem = next(ln for ln in text.splitlines() if ln.startswith('| mona-lowmem |'))
    assert lowmem.split(' | ')[2:4] == ['90.0', 'failed']
    assert lowmem.rstrip(' |').endswith('- / - / 0')
    assert ('compile failed in mona-lowmem (train fp32): AssertionError: Node add_17 was '
            'invalid') in text
    assert 'fp32: mona train step / full train step: compiled 0.80 (goal <= 0.80: met)' in text
