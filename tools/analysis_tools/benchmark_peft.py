"""Train-step time, peak memory and inference latency of PEFT modes on a Swin (or ViT)
backbone, each also as a ratio to full fine-tuning / plain inference measured in the same run.

Usage:
  python tools/analysis_tools/benchmark_peft.py --arch base --size 800 1216 --batch 2 \\
      --dtype fp32 bf16 --repeat 2 --modes full fixed mona-reference mona mona-lowmem \\
      mona-mimi floor adapter lora --json work_dirs/bench.json [--profile]
  python tools/analysis_tools/benchmark_peft.py ... --count-memory   # bytes, no timing
  python tools/analysis_tools/benchmark_peft.py --from-json work_dirs/bench.json  # table again

A mode is a method slug (``full``, ``fixed``, ``bitfit``, ``norm-tuning``, ``partial-1``,
``adapter``, ``lora``, ``adaptformer``, ``lorand``, ``mona``, ``mona-reference``; the
registered type, e.g. ``NormTuning``, is read too) or a variant: ``-lowmem`` builds the
backbone with ``recompute=('adapters', )``, ``mona-mimi`` is Mona after a global MiMi
selection keeping 1/``--mimi-ratio`` of the neurons, ``floor`` is Mona with one neuron per
adapter.

Train step = forward + backward + AdamW step (optimizer over trainable parameters only).
Inference = eval forward under no_grad; Mona/LoRA modes are re-parameterised first.
Peak memory of a train step: CUDA max allocated; on CPU the peak RSS above what the process
held before building the model (weights included), measured in a separate process per mode
(the kernel's peak mark is reset between dtypes) whose allocator returns every block >= 64 KiB
to the OS on free (MALLOC_MMAP_THRESHOLD_), so RSS follows live tensors instead of allocator
caching (repeat runs agree to ~1 MB; the timing processes run with the normal allocator).

``--count-memory`` instead counts, without timing anything, the bytes a train step must hold:
weights, gradients and AdamW state plus every activation autograd keeps for the backward
(saved-tensor hooks, shared storages once). The count does not depend on the device, so memory
ratios at GPU sizes can be measured on the CPU (transient workspace is not included).
"""
import argparse
import copy
import json
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

import torch

import mona_mm  # noqa: F401
from mona_mm.models import (PEFTSwinTransformer, PEFTVisionTransformer, iter_adapters,
                            reparameterize)
from mona_mm.models.peft.names import EXTRA_TYPES, METHOD_SLUGS, method_slug, peft_config
from mona_mm.pruning import adapter_param_total, neuron_scores, prune_adapters, select_keep
from mona_mm.utils import count_trainable, saved_activation_bytes, training_state_bytes

# a benchmark mode is a method slug (mona_mm.models.peft.names) or a variant of one
MODES = {slug: peft_config(slug) for slug in (*METHOD_SLUGS, *EXTRA_TYPES)}
MODES.update({
    'mona-lowmem': dict(type='Mona'), 'mona-mimi': dict(type='Mona'),
    'mona-mimi-lowmem': dict(type='Mona'),
    # one neuron per adapter: the frozen backbone's own forward + input-gradient backward,
    # i.e. the floor any method that trains the first block pays
    'floor': dict(type='Mona', hidden_dims=1),
})
# the CPU memory pass: glibc returns blocks of at least this size to the OS on free
MMAP_THRESHOLD = str(64 * 1024)


def build(mode: str, arch, mimi_ratio: float, device: str, with_cp: bool,
          backbone: str = 'swin', size=(224, 224)):
    peft = MODES[mode] if mode in MODES else peft_config(mode)
    recompute = ('adapters', ) if mode.endswith('-lowmem') else ()
    if backbone == 'vit':  # mmpretrain's ViT at the benchmark size, patch 16
        if with_cp:
            raise SystemExit("--with-cp: mmpretrain's ViT has no with_cp; use the -lowmem modes")
        bb = PEFTVisionTransformer(codebase='mmpretrain', arch=arch, img_size=tuple(size),
                                   patch_size=16, out_type='featmap', peft=peft,
                                   recompute=recompute)
    else:
        bb = PEFTSwinTransformer(arch=arch, peft=peft, with_cp=with_cp,
                                 recompute=recompute)
    if mode.startswith('mona-mimi'):  # global MiMi selection on the (random-init) weights
        adapters = dict(iter_adapters(bb))
        scores = {n: neuron_scores(a, 'mimi') for n, a in adapters.items()}
        total = sum(a.hidden_dims for a in adapters.values())
        keep_n = int(total / mimi_ratio)
        rho = 1 - keep_n / total
        prune_adapters(bb, select_keep(scores, rho, 'global'))
    return bb.to(device)


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def _rss_mb() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def _train_step(bb, x, opt, device: str, amp: bool) -> None:
    with torch.autocast(device.split(':')[0], dtype=torch.bfloat16, enabled=amp):
        outs = bb(x)
        loss = sum(o.float().square().mean() for o in outs)
    if opt is not None:
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def _setup(mode: str, args):
    torch.manual_seed(0)
    bb = build(mode, args.arch_cfg, args.mimi_ratio, args.device, args.with_cp, args.backbone,
               args.size).train()
    params = [p for p in bb.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4) if params else None
    x = torch.randn(args.batch, 3, *args.size, device=args.device)
    return bb, opt, x


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where not allowed."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    with open('/proc/self/status') as f:
        return int(re.search(r'VmHWM:\s+(\d+)', f.read()).group(1)) / 1024


def measure_cpu_memory(mode: str, dtypes: List[str], args) -> Dict[str, float]:
    """Peak RSS (MB) of two train steps per dtype above the RSS before the model existed."""
    base_rss = _rss_mb()
    bb, opt, x = _setup(mode, args)
    res = {}
    for i, dtype in enumerate(dtypes):
        if i and not _reset_peak_rss():
            raise RuntimeError('cannot reset the peak RSS: measure one dtype per process')
        for _ in range(2):
            _train_step(bb, x, opt, args.device, dtype == 'bf16')
        res[f'peak_mb_{dtype}'] = _peak_rss_mb() - base_rss
    return res


def measure(mode: str, args) -> Dict[str, float]:
    """Train-step and inference medians (and CUDA peak memory) of one mode."""
    device = args.device
    bb, opt, x = _setup(mode, args)
    res: Dict[str, float] = dict(trainable=count_trainable(bb)['backbone_trainable'],
                                 adapter_params=adapter_param_total(bb))
    for dtype in args.dtype:
        amp = dtype == 'bf16'
        bb.train()
        times = []
        if device.startswith('cuda'):
            torch.cuda.reset_peak_memory_stats()
        for i in range(args.warmup + args.iters):
            _sync(device)
            t0 = time.perf_counter()
            _train_step(bb, x, opt, device, amp)
            _sync(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        res[f'train_ms_{dtype}'] = 1e3 * statistics.median(times)
        if device.startswith('cuda'):
            res[f'peak_mb_{dtype}'] = torch.cuda.max_memory_allocated() / 2**20
    inf = copy.deepcopy(bb).eval()
    reparameterize(inf)
    for dtype in args.dtype:
        amp = dtype == 'bf16'
        times = []
        with torch.no_grad(), torch.autocast(device.split(':')[0], dtype=torch.bfloat16,
                                             enabled=amp):
            for i in range(args.warmup + args.iters):
                _sync(device)
                t0 = time.perf_counter()
                inf(x)
                _sync(device)
                if i >= args.warmup:
                    times.append(time.perf_counter() - t0)
        res[f'infer_ms_{dtype}'] = 1e3 * statistics.median(times)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA]
                                         if device.startswith('cuda') else [])
        bb.train()
        with profile(activities=acts, profile_memory=True) as prof:
            _train_step(bb, x, opt, device, args.dtype[0] == 'bf16')
            _sync(device)
        key = 'self_cuda_time_total' if device.startswith('cuda') else 'self_cpu_time_total'
        print(f'[profile {mode}]\n' + prof.key_averages().table(sort_by=key, row_limit=15),
              file=sys.stderr)
    return res


def count_memory(mode: str, args) -> Dict[str, float]:
    """MB that one train step of ``mode`` holds: training state + saved activations."""
    bb, _, x = _setup(mode, args)
    state = training_state_bytes(bb.parameters())
    res: Dict[str, float] = dict(trainable=count_trainable(bb)['backbone_trainable'],
                                 adapter_params=adapter_param_total(bb),
                                 state_mb=sum(state.values()) / 2**20)
    for dtype in args.dtype:
        with torch.autocast(args.device.split(':')[0], dtype=torch.bfloat16,
                            enabled=dtype == 'bf16'):
            saved = saved_activation_bytes(bb, lambda: bb(x))
        res[f'saved_mb_{dtype}'] = saved / 2**20
        res[f'total_mb_{dtype}'] = res['state_mb'] + saved / 2**20
    return res


def memory_table(results: Dict[str, Dict[str, float]], dtypes: List[str]) -> str:
    ref = results.get('full')
    head = ['mode', 'trainable', 'weights+grads+AdamW MB']
    for d in dtypes:
        head += [f'saved activations MB ({d})', f'total MB ({d})', 'x full']
    rows = ['| ' + ' | '.join(head) + ' |', '|' + '|'.join('---' for _ in head) + '|']
    for mode, r in results.items():
        cells = [mode, f"{int(r['trainable']):,}", f"{r['state_mb']:.0f}"]
        for d in dtypes:
            cells += [f"{r[f'saved_mb_{d}']:.0f}", f"{r[f'total_mb_{d}']:.0f}",
                      f"{r[f'total_mb_{d}'] / ref[f'total_mb_{d}']:.2f}" if ref else '-']
        rows.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(rows)


def _run_child(argv: List[str], env: Optional[Dict[str, str]] = None) -> dict:
    out = subprocess.run([sys.executable, __file__, *argv], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, check=False,
                         env=dict(os.environ, **(env or {})))
    if out.returncode != 0:
        raise RuntimeError(f'benchmark child {argv[-2:]} failed:\n{out.stderr[-3000:]}')
    if '--profile' in argv and '[profile' in out.stderr:
        print(out.stderr[out.stderr.find('[profile'):], file=sys.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_isolated(mode: str, argv: List[str], dtypes: List[str]) -> Dict[str, float]:
    """One mode on the CPU: timings in a fresh process, then the peak memory of each dtype in
    its own process with the allocator set to follow live memory."""
    res = _run_child([*argv, '--single-mode', mode])
    plain = [a for a in argv if a != '--profile']
    env = dict(MALLOC_MMAP_THRESHOLD_=MMAP_THRESHOLD)
    groups = [dtypes] if _reset_peak_rss() else [[d] for d in dtypes]
    for group in groups:
        res.update(_run_child([*plain, '--memory-mode', mode, '--memory-dtypes', *group],
                              env=env))
    return res


def table(results: Dict[str, Dict[str, float]], dtypes: List[str], device: str) -> str:
    ref_train = results.get('full')
    ref_inf = results.get('fixed') or results.get('full')
    mem_key = (lambda d: f'peak_mb_{d}')  # noqa: E731
    head = ['mode', 'trainable']
    for d in dtypes:
        head += [f'train ms ({d})', 'x full', f'peak MB ({d})', 'x full', f'infer ms ({d})',
                 'x plain']
    rows = ['| ' + ' | '.join(head) + ' |', '|' + '|'.join('---' for _ in head) + '|']
    for mode, r in results.items():
        cells = [mode, f"{int(r['trainable']):,}"]
        for d in dtypes:
            cells += [f"{r[f'train_ms_{d}']:.1f}",
                      f"{r[f'train_ms_{d}'] / ref_train[f'train_ms_{d}']:.2f}" if ref_train else '-',
                      f"{r[mem_key(d)]:.0f}",
                      f"{r[mem_key(d)] / ref_train[mem_key(d)]:.2f}" if ref_train else '-',
                      f"{r[f'infer_ms_{d}']:.1f}",
                      f"{r[f'infer_ms_{d}'] / ref_inf[f'infer_ms_{d}']:.2f}" if ref_inf else '-']
        rows.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(rows)


def mode_name(name: str) -> str:
    """The mode a command-line name means: a mode, a method's registered type
    (``NormTuning``), or the underscore spelling of earlier results (``mona_lowmem``).

    Args:
        name: As typed.
    """
    folded = name.lower().replace('_', '-')
    if folded in MODES:
        return folded
    try:  # any method by slug or type, e.g. partial-2 or a registered third-party method
        return method_slug(name)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f'unknown mode {name!r}; modes: {", ".join(MODES)}')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Measure the train-step time, peak memory and inference latency of PEFT '
        'modes on a Swin or ViT backbone, with ratios to full fine-tuning and plain inference '
        'from the same run.')
    parser.add_argument('--arch', default='base',
                        help='Backbone arch: a name of the family (Swin: tiny, small, base, '
                        'large; ViT: one of mmpretrain\'s archs, e.g. b) or its numbers '
                        '(Swin: embed_dims,d1,d2,d3,d4,h1,h2,h3,h4; ViT: '
                        'embed_dims,layers,heads,ffn) (default: %(default)s).')
    parser.add_argument('--backbone', default='swin', choices=['swin', 'vit'],
                        help="Backbone family: 'swin' (mmdet's Swin) or 'vit' (mmpretrain's "
                        'ViT, patch 16) (default: %(default)s).')
    parser.add_argument('--config', help='Take the arch from this config\'s backbone instead '
                        'of --arch.')
    parser.add_argument('--size', nargs=2, type=int, default=[800, 1216], metavar=('H', 'W'),
                        help='Input height and width (default: 800 1216).')
    parser.add_argument('--batch', type=int, default=2,
                        help='Images per step (default: %(default)s).')
    parser.add_argument('--dtype', nargs='+', default=['fp32'], choices=['fp32', 'bf16'],
                        help='Precisions to measure: fp32, and/or bf16 under autocast '
                        '(default: fp32).')
    parser.add_argument('--modes', nargs='+', type=mode_name, metavar='MODE',
                        default=['full', 'fixed', 'mona-reference', 'mona', 'mona-mimi'],
                        help=f'Modes to measure, in this order: {", ".join(MODES)}, or any '
                        'method slug (e.g. partial-2); a method\'s registered type (e.g. '
                        'NormTuning) is read as its slug '
                        '(default: full fixed mona-reference mona mona-mimi).')
    parser.add_argument('--mimi-ratio', type=float, default=4.0,
                        help='The mona-mimi modes keep 1/ratio of the adapter neurons '
                        '(default: %(default)s).')
    parser.add_argument('--iters', type=int, default=10,
                        help='Timed steps per mode and dtype; the median is reported '
                        '(default: %(default)s).')
    parser.add_argument('--repeat', type=int, default=1,
                        help='Run the whole mode list this many times, round-robin, and keep '
                        'the fastest median of each mode, which damps interference on shared '
                        'machines (default: %(default)s).')
    parser.add_argument('--warmup', type=int, default=3,
                        help='Untimed steps before the timed ones (default: %(default)s).')
    parser.add_argument('--with-cp', action='store_true',
                        help='Checkpoint the activations of whole blocks (Swin only).')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='Device to measure on (default: cuda when available, else cpu).')
    parser.add_argument('--json', help='Write every number, the command, the device and the '
                        'versions to this JSON file.')
    parser.add_argument('--profile', action='store_true',
                        help='Also print a torch.profiler table (top ops) of one train step '
                        'per mode, to show where the time and memory go.')
    parser.add_argument('--count-memory', action='store_true',
                        help='Count the memory a train step holds (weights, gradients, AdamW '
                        'state, saved activations) instead of timing; the count is '
                        'device-independent.')
    parser.add_argument('--from-json', metavar='JSON',
                        help='Print the header and table of a file written by --json again, '
                        'with mode names in the current spelling, and measure nothing.')
    parser.add_argument('--single-mode', help=argparse.SUPPRESS)
    parser.add_argument('--memory-mode', help=argparse.SUPPRESS)
    parser.add_argument('--memory-dtypes', nargs='+', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.config:
        from mmengine.config import Config
        arch = Config.fromfile(args.config).model.backbone.get('arch', 'tiny')
        args.arch_cfg = arch if isinstance(arch, str) else dict(arch)
    elif ',' in args.arch and args.backbone == 'vit':
        v = [int(t) for t in args.arch.split(',')]
        args.arch_cfg = dict(embed_dims=v[0], num_layers=v[1], num_heads=v[2],
                             feedforward_channels=v[3])
    elif ',' in args.arch:
        v = [int(t) for t in args.arch.split(',')]
        args.arch_cfg = dict(embed_dims=v[0], depths=tuple(v[1:5]), num_heads=tuple(v[5:9]))
    else:
        args.arch_cfg = args.arch
    return args


def _measure_mode(mode: str, argv: List[str], args, repeat: bool) -> Dict[str, float]:
    """All numbers of one mode; on a ``repeat`` only what varies (CPU memory is
    deterministic and kept from the first run)."""
    if args.count_memory and not args.device.startswith('cuda'):
        # own process: glibc would keep freed activations of earlier modes mapped
        return _run_child([*argv, '--single-mode', mode],
                          env=dict(MALLOC_MMAP_THRESHOLD_=MMAP_THRESHOLD))
    if args.count_memory:
        return count_memory(mode, args)
    if args.device.startswith('cuda'):
        return measure(mode, args)
    if repeat:
        return _run_child([*argv, '--single-mode', mode])
    return run_isolated(mode, argv, args.dtype)


def header(info: dict) -> str:
    """The line above a table: device, versions, arch, input size and what was measured.

    Args:
        info: The ``info`` part of a ``--json`` file.
    """
    size = info['size']
    what = 'memory counted' if str(info.get('memory', '')).startswith('counted') else \
        f"median of {info['iters']}" + (f", fastest of {info['repeat']} runs"
                                        if info.get('repeat', 1) > 1 else '')
    return (f"device: {info['device']} | torch {info['torch']} | mmcv {info['mmcv']} | "
            f"mmdet {info['mmdet']} | {info.get('backbone', 'swin')} {info['arch']} | "
            f"{info['batch']}x3x{size[0]}x{size[1]} | {what}")


def render(path: str) -> str:
    """The header and table of a ``--json`` file, as the measuring run printed them (modes
    written in an earlier spelling, e.g. ``mona_lowmem``, are printed as today's modes).

    Args:
        path: A file written by ``--json``.
    """
    with open(path) as f:
        data = json.load(f)
    info = data['info']
    results = {}
    for mode, r in data['results'].items():
        try:
            results[mode_name(mode)] = r
        except argparse.ArgumentTypeError:  # a mode of another version: as written
            results[mode] = r
    counted = any('saved_mb_' in k for r in results.values() for k in r)
    return header(info) + '\n\n' + (
        memory_table(results, info['dtypes']) if counted else
        table(results, info['dtypes'], info['device']))


def main() -> None:
    argv = [a for a in sys.argv[1:]]
    args = parse_args(argv)
    if args.from_json:
        print(render(args.from_json))
        return
    if args.single_mode:
        fn = count_memory if args.count_memory else measure
        print(json.dumps(fn(args.single_mode, args)))
        return
    if args.memory_mode:
        print(json.dumps(measure_cpu_memory(args.memory_mode, args.memory_dtypes, args)))
        return
    results: Dict[str, Dict[str, float]] = {}
    for rep in range(args.repeat):
        for mode in args.modes:
            print(f'[benchmark] {mode} ({rep + 1}/{args.repeat}) ...', flush=True)
            res = _measure_mode(mode, argv, args, repeat=mode in results)
            if mode in results:  # keep the fastest median of the repeats
                for k, v in res.items():
                    if k.startswith(('train_ms', 'infer_ms')):
                        results[mode][k] = min(results[mode][k], v)
            else:
                results[mode] = res

    import mmcv
    import mmdet
    import mmengine
    info = dict(device=torch.cuda.get_device_name() if args.device.startswith('cuda') else
                f'CPU ({os.cpu_count()} cores)', torch=torch.__version__,
                mmengine=mmengine.__version__, mmcv=mmcv.__version__, mmdet=mmdet.__version__,
                memory='counted: state + saved activations' if args.count_memory else
                'cuda max_memory_allocated' if args.device.startswith('cuda') else
                f'peak RSS above start, MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}',
                backbone=args.backbone, arch=args.arch_cfg,
                size=args.size, batch=args.batch, dtypes=args.dtype, iters=args.iters,
                warmup=args.warmup, repeat=args.repeat, with_cp=args.with_cp,
                command=' '.join(sys.argv))
    # as the JSON holds it (tuples become lists): --from-json prints the same header
    info = json.loads(json.dumps(info))
    print(header(info) + '\n')
    print(memory_table(results, args.dtype) if args.count_memory else
          table(results, args.dtype, args.device))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(dict(info=info, results=results), f, indent=1)


if __name__ == '__main__':
    main()
