"""Train-step time, peak memory and inference latency of PEFT modes on a Swin (or ViT)
backbone, each also as a ratio to full fine-tuning / plain inference measured in the same run.

Usage:
  python tools/analysis_tools/benchmark_peft.py --arch base --size 800 1216 --batch 2 \\
      --dtype fp32 bf16 --repeat 2 --modes full fixed mona-reference mona mona-lowmem \\
      mona-mimi floor adapter lora --json work_dirs/bench.json [--profile]
  python tools/analysis_tools/benchmark_peft.py ... --count-memory   # bytes, no timing
  python tools/analysis_tools/benchmark_peft.py ... --compile   # eager and torch.compile
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

``--compile`` measures every mode eager and ``torch.compile``d side by side, in one process
per mode with its own empty inductor cache: the forward + loss (its backward through
AOTAutograd) and the AdamW step are compiled, the eager and compiled steps alternate (ABBA
order) over the same model, optimizer and input, and each side reports its median; the wall
time of the compiled calls until one compiles nothing is reported apart, as compile time, with
dynamo's graph and graph-break counts. Memory is then the peak of live tensor bytes one steady
step allocates above what was live before it (the profiler's allocation records on the CPU,
CUDA ``max_memory_allocated`` on a GPU, where the absolute peak is reported too), the same
measure for both sides; RSS is not comparable here (the compiler's own memory), nor is
``--count-memory`` (a compiled graph keeps its saved tensors out of autograd's hooks).

``--count-memory`` instead counts, without timing anything, the bytes a train step must hold:
weights, gradients and AdamW state plus every activation autograd keeps for the backward
(saved-tensor hooks, shared storages once). The count does not depend on the device, so memory
ratios at GPU sizes can be measured on the CPU (transient workspace is not included).
"""
import argparse
import collections
import copy
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
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


def _loss(bb, x):
    return sum(o.float().square().mean() for o in bb(x))


def _opt_step(opt) -> None:  # what --compile compiles of the optimizer
    opt.step()


def _train_step(bb, x, opt, device: str, amp: bool) -> None:
    with torch.autocast(device.split(':')[0], dtype=torch.bfloat16, enabled=amp):
        loss = _loss(bb, x)
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
        if args.profile and dtype == args.dtype[0]:
            _print_profile(f'{mode}, inference', partial(_infer_once, inf, x, device, amp),
                           device)
    if args.profile:
        bb.train()
        _print_profile(mode, partial(_train_step, bb, x, opt, device, args.dtype[0] == 'bf16'),
                       device)
    return res


def _infer_once(net: torch.nn.Module, x: torch.Tensor, device: str, amp: bool) -> None:
    with torch.no_grad(), torch.autocast(device.split(':')[0], dtype=torch.bfloat16,
                                         enabled=amp):
        net(x)


def _print_profile(title: str, step, device: str) -> None:
    """Two torch.profiler tables of one call of ``step``, to stderr: the top operators, then
    the top (operator, input shapes) pairs, which tell the adapters' matmuls (a 64-wide side)
    from the backbone's."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA]
                                     if device.startswith('cuda') else [])
    with profile(activities=acts, profile_memory=True, record_shapes=True) as prof:
        step()
        _sync(device)
    key = 'self_cuda_time_total' if device.startswith('cuda') else 'self_cpu_time_total'
    print(f'[profile {title}]\n' + prof.key_averages().table(sort_by=key, row_limit=15),
          file=sys.stderr)
    by_shape = prof.key_averages(group_by_input_shape=True)
    print(f'[profile {title}, by input shape]\n' + by_shape.table(sort_by=key, row_limit=25),
          file=sys.stderr)


def _compile_events() -> int:
    """Frames dynamo has compiled so far in this process (a new one = a compile happened)."""
    from torch._dynamo.utils import counters
    return counters['frames']['total']


def _dynamo_counts() -> collections.Counter:
    """dynamo's graphs and graph breaks so far in this process, and the breaks by reason
    (the first line of dynamo's message) under ``break: <reason>``."""
    from torch._dynamo.utils import counters
    out = collections.Counter(graphs=counters['stats']['unique_graphs'],
                              breaks=sum(counters['graph_break'].values()))
    for reason, n in counters['graph_break'].items():
        out['break: ' + reason.strip().splitlines()[0]] += n
    return out


def _reasons(counts: collections.Counter) -> Dict[str, int]:
    return {k[len('break: '):]: n for k, n in counts.items() if k.startswith('break: ') and n}


def _step_alloc_mb(fn, device: str) -> Dict[str, float]:
    """Peak of live tensor memory that one call of ``fn`` allocates above what was live before
    it (MB, ``step``): CUDA ``max_memory_allocated``; on the CPU the profiler's allocation
    records, which see the tensors a compiled graph allocates as well as eager ones. On CUDA
    also the absolute peak (``peak``, weights included, as the eager-only table reports)."""
    if device.startswith('cuda'):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return dict(step=(peak - before) / 2**20, peak=peak / 2**20)
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    records = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                     if e.name() == '[memory]')
    live = peak = 0
    for _, nbytes in records:
        live += nbytes
        peak = max(peak, live)
    return dict(step=peak / 2**20)


def _warm_compiled(fn, device: str, warmup: int) -> Dict[str, float]:
    """Call a compiled ``fn`` until a call compiles nothing new (at most 5 calls compile),
    then ``warmup`` more times; return the wall seconds of the compiling calls."""
    seconds, calls = 0.0, 0
    while calls < 5:
        before = _compile_events()
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        if _compile_events() == before and calls:  # warm: this call compiled nothing
            break
        seconds += time.perf_counter() - t0
        calls += 1
    for _ in range(warmup):
        fn()
    return dict(seconds=seconds, calls=calls)


def _error_line(e: Exception) -> str:
    """The line of a compile failure that says what failed (dynamo's message ends in hints)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    named = [ln for ln in lines if 'Error' in ln]
    return (named or lines or [type(e).__name__])[0][:300]


def _time_pair(eager, compiled, device: str, iters: int) -> Dict[str, List[float]]:
    """Time ``iters`` calls of each, alternating in ABBA order so that load drift and cache
    state hit both sides alike (only ``eager`` where ``compiled`` is None)."""
    times: Dict[str, List[float]] = dict(eager=[], compiled=[])
    for i in range(iters):
        order = (('eager', eager), ) if compiled is None else \
            (('eager', eager), ('compiled', compiled))
        for name, fn in (order if i % 2 == 0 else order[::-1]):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def measure_compiled(mode: str, args) -> Dict[str, object]:
    """Eager and ``torch.compile``d train step and inference of one mode, interleaved in this
    process over the same model, optimizer and input.

    Compiled are the forward + loss (its backward through AOTAutograd) and the optimizer step,
    as mmengine's ``compile=True`` compiles them inside ``train_step``; inference compiles the
    re-parameterised model's forward. The eager steps of each dtype run first, so the
    backbone's one-time first-forward work stays out of the compiled graphs.

    Args:
        mode: A benchmark mode.
        args: The parsed command line.
    """
    device, backend = args.device, args.compile_backend
    bb, opt, x = _setup(mode, args)
    res: Dict[str, object] = dict(trainable=count_trainable(bb)['backbone_trainable'],
                                  adapter_params=adapter_param_total(bb))
    loss_c = torch.compile(_loss, backend=backend)
    step_c = torch.compile(_opt_step, backend=backend)
    reasons = dict(train=collections.Counter(), infer=collections.Counter())

    def measure_pair(kind: str, dtype: str, eager, compiled) -> Optional[collections.Counter]:
        """Warm both sides, time them interleaved, then one step each under the memory
        probe; return dynamo's graph and break counts of the compiling calls, or None where
        compiling failed (recorded; the eager side is still measured)."""
        key = f'{kind}_{dtype}'
        for _ in range(args.warmup):
            eager()
        start = _dynamo_counts()
        try:
            warm = _warm_compiled(compiled, device, args.warmup)
        except Exception as e:  # a backend's failure is a result of the mode: recorded
            res[f'compile_error_{key}'] = _error_line(e)
            compiled = None
        counts = _dynamo_counts()
        counts.subtract(start)
        events = _compile_events()
        times = _time_pair(eager, compiled, device, args.iters)
        res[f'{kind}_ms_{dtype}'] = 1e3 * statistics.median(times['eager'])
        sides = [('', eager)]
        if compiled is not None:
            sides.append(('_compiled', compiled))
            res[f'{kind}_ms_{dtype}_compiled'] = 1e3 * statistics.median(times['compiled'])
            res[f'compile_s_{key}'] = warm['seconds']
            res[f'compile_calls_{key}'] = warm['calls']
        for side, fn in sides:
            mem = _step_alloc_mb(fn, device)
            res[f'alloc_mb_{key}{side}'] = mem['step']
            if 'peak' in mem and kind == 'train':  # as the eager-only table's peak MB
                res[f'peak_mb_{dtype}{side}'] = mem['peak']
        if compiled is None:
            return None
        # 0: the guards held, so no timed or probed call compiled anything
        res[f'recompiles_after_warm_{key}'] = _compile_events() - events
        return counts

    for dtype in args.dtype:
        amp = dtype == 'bf16'
        bb.train()
        model = collections.Counter()  # what the compiled forward (+ backward) added

        def compiled_step(amp=amp, model=model):
            before = _dynamo_counts()
            with torch.autocast(device.split(':')[0], dtype=torch.bfloat16, enabled=amp):
                loss = loss_c(bb, x)
            model.update(_dynamo_counts())  # tells the model's graphs from the step's
            model.subtract(before)
            if opt is not None:
                loss.backward()
                step_c(opt)
                opt.zero_grad(set_to_none=True)

        total = measure_pair('train', dtype, partial(_train_step, bb, x, opt, device, amp),
                             compiled_step)
        if total is None:
            continue
        res[f'graphs_train_{dtype}'] = model['graphs']
        res[f'graph_breaks_train_{dtype}'] = model['breaks']
        res[f'graph_breaks_optimizer_{dtype}'] = total['breaks'] - model['breaks']
        reasons['train'].update(_reasons(model))
        if args.profile and dtype == args.dtype[0]:
            _print_profile(f'{mode}, eager', partial(_train_step, bb, x, opt, device, amp),
                           device)
            _print_profile(f'{mode}, compiled', compiled_step, device)
    inf = copy.deepcopy(bb).eval()
    reparameterize(inf)
    forward_c = torch.compile(inf, backend=backend)
    for dtype in args.dtype:
        amp = dtype == 'bf16'
        infer = partial(_infer_once, inf, x, device, amp)
        infer_c = partial(_infer_once, forward_c, x, device, amp)
        total = measure_pair('infer', dtype, infer, infer_c)
        if args.profile and dtype == args.dtype[0]:
            _print_profile(f'{mode}, inference, eager', infer, device)
            if total is not None:
                _print_profile(f'{mode}, inference, compiled', infer_c, device)
        if total is None:
            continue
        res[f'graphs_infer_{dtype}'] = total['graphs']
        res[f'graph_breaks_infer_{dtype}'] = total['breaks']
        reasons['infer'].update(_reasons(total))
    # the model's and the inference's own; the optimizer's are torch.optim's, by design
    res['graph_break_reasons'] = {k: dict(v) for k, v in reasons.items() if v}
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


# what the compiled run is measured against (the goals for the compiled step)
COMPILE_GOALS = dict(mona_train_x_full=0.80, mona_infer_x_plain=1.05)


def compile_ratios(results: Dict[str, dict], dtypes: List[str]) -> Dict[str, dict]:
    """The ratios of a ``--compile`` run, per dtype, each from numbers of the same run: Mona's
    train step over full fine-tuning's and Mona's re-parameterised inference over the plain
    backbone's (``fixed``, else ``full``: the same network at inference), eager and
    compiled, with their goals; and compiled over eager for every mode (a ratio whose
    compiled side failed to compile is left out).

    Args:
        results: The ``results`` of a ``--compile`` run.
        dtypes: Its dtypes.
    """
    full, mona = results.get('full'), results.get('mona')
    plain = 'fixed' if 'fixed' in results else 'full' if full else None

    def over(a: Optional[dict], b: Optional[dict], key: str) -> Optional[float]:
        return a[key] / b[key] if a and b and key in a and key in b else None

    out: Dict[str, dict] = {}
    for d in dtypes:
        r: Dict[str, object] = {}
        for side, sfx in (('eager', ''), ('compiled', '_compiled')):
            for name, ref, kind in (('mona_train_x_full', full, 'train'),
                                    ('mona_infer_x_plain', results.get(plain), 'infer')):
                value = over(mona, ref, f'{kind}_ms_{d}{sfx}')
                if value is not None:
                    r[f'{name}_{side}'] = value
        r['plain'] = plain
        r['goals'] = dict(COMPILE_GOALS)
        r['compiled_x_eager'] = {
            m: {k: v[f'{k}_ms_{d}_compiled'] / v[f'{k}_ms_{d}'] for k in ('train', 'infer')
                if f'{k}_ms_{d}_compiled' in v}
            for m, v in results.items()}
        out[d] = r
    return out


def compiled_table(results: Dict[str, dict], dtype: str) -> str:
    """The ``--compile`` table of one dtype: eager and compiled side by side (``failed``
    where the compiled side did not compile)."""
    ref_train = results.get('full')
    ref_inf = results.get('fixed') or results.get('full')

    def num(r: dict, key: str, fmt: str = '.1f') -> str:
        if key in r:
            return format(r[key], fmt)
        return 'failed' if key.endswith('_compiled') or key.startswith('compile_s') else '-'

    def ratio(r: dict, ref: Optional[dict], key: str, ref_key: Optional[str] = None) -> str:
        ref_key = ref_key or key
        return f'{r[key] / ref[ref_key]:.2f}' if ref and key in r and ref_key in ref else '-'

    head = ['mode', 'trainable', 'train ms eager', 'train ms compiled', 'compiled / eager',
            'x full eager', 'x full compiled', 'infer ms eager', 'infer ms compiled',
            'compiled / eager', 'x plain eager', 'x plain compiled', 'compile s train',
            'compile s infer', 'step MB eager', 'step MB compiled',
            'graph breaks fw+bw / optimizer / infer']
    p = f'peak_mb_{dtype}'
    peak = all(p in r for r in results.values())  # CUDA: the absolute peak too
    if peak:
        head[-1:-1] = ['peak MB eager', 'peak MB compiled', 'x full eager', 'x full compiled']
    rows = [f'{dtype}:', '', '| ' + ' | '.join(head) + ' |',
            '|' + '|'.join('---' for _ in head) + '|']
    t, i = f'train_ms_{dtype}', f'infer_ms_{dtype}'
    tc, ic = f'{t}_compiled', f'{i}_compiled'
    for mode, r in results.items():
        breaks = ' / '.join(str(r.get(f'graph_breaks_{part}_{dtype}', '-'))
                            for part in ('train', 'optimizer', 'infer'))
        cells = [mode, f"{int(r['trainable']):,}", num(r, t), num(r, tc), ratio(r, r, tc, t),
                 ratio(r, ref_train, t), ratio(r, ref_train, tc), num(r, i), num(r, ic),
                 ratio(r, r, ic, i), ratio(r, ref_inf, i), ratio(r, ref_inf, ic),
                 num(r, f'compile_s_train_{dtype}'), num(r, f'compile_s_infer_{dtype}'),
                 num(r, f'alloc_mb_train_{dtype}', '.0f'),
                 num(r, f'alloc_mb_train_{dtype}_compiled', '.0f'), breaks]
        if peak:
            cells[-1:-1] = [num(r, p, '.0f'), num(r, p + '_compiled', '.0f'),
                            ratio(r, ref_train, p), ratio(r, ref_train, p + '_compiled')]
        rows.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(rows)


def compile_report(results: Dict[str, dict], dtypes: List[str]) -> str:
    """The tables of a ``--compile`` run, one per dtype, then its goal ratios, the graph
    breaks by reason and the compile failures.

    Args:
        results: The ``results`` of a ``--compile`` run.
        dtypes: Its dtypes.
    """
    parts = [compiled_table(results, d) for d in dtypes]
    lines = []
    for d, r in compile_ratios(results, dtypes).items():
        for key, what in (('mona_train_x_full', 'mona train step / full train step'),
                          ('mona_infer_x_plain', 'mona inference (re-parameterised) / '
                           f"{r['plain']} inference")):
            if f'{key}_compiled' in r:
                c, goal = r[f'{key}_compiled'], r['goals'][key]
                lines.append(f"{d}: {what}: compiled {c:.2f} (goal <= {goal:.2f}: "
                             f"{'met' if c <= goal else 'not met'}), eager "
                             f"{r[f'{key}_eager']:.2f}")
    for mode, r in results.items():
        for part, why in r.get('graph_break_reasons', {}).items():
            lines.append(f'graph breaks in {mode} ({part}): ' +
                         '; '.join(f'{n}x {reason}' for reason, n in why.items()))
        lines += [f"compile failed in {mode} ({k[len('compile_error_'):].replace('_', ' ')}): "
                  f'{v}' for k, v in r.items() if k.startswith('compile_error_')]
    if any(r.get(f'graph_breaks_optimizer_{d}') for r in results.values() for d in dtypes):
        lines.append('optimizer graph breaks: torch.optim\'s own graph_break() calls around '
                     'the step (a no_grad region for AOTAutograd), not the model\'s')
    return '\n\n'.join(parts) + ('\n\n' + '\n'.join(lines) if lines else '')


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
                        'and one inference call per mode (eager and, with --compile, '
                        'compiled), to show where the time and memory go.')
    parser.add_argument('--count-memory', action='store_true',
                        help='Count the memory a train step holds (weights, gradients, AdamW '
                        'state, saved activations) instead of timing; the count is '
                        'device-independent.')
    parser.add_argument('--compile', action='store_true',
                        help='Measure every mode eager and torch.compile\'d side by side in '
                        'one process per mode (steps alternate; compile time, graph breaks '
                        'and the compiled/eager ratios reported apart).')
    parser.add_argument('--compile-backend', default='inductor', metavar='BACKEND',
                        help='torch.compile backend for --compile, e.g. aot_eager to check '
                        'the graphs without generating code (default: %(default)s).')
    parser.add_argument('--resume', action='store_true',
                        help='With --json: keep the modes an interrupted run of the same '
                        'measurement already wrote there and measure only the others (the '
                        'file is rewritten after every mode, so a long run can span '
                        'sessions).')
    parser.add_argument('--from-json', metavar='JSON',
                        help='Print the header and table of a file written by --json again, '
                        'with mode names in the current spelling, and measure nothing.')
    parser.add_argument('--single-mode', help=argparse.SUPPRESS)
    parser.add_argument('--memory-mode', help=argparse.SUPPRESS)
    parser.add_argument('--memory-dtypes', nargs='+', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.resume and not args.json:
        parser.error('--resume continues the run recorded in --json FILE: give --json')
    if args.compile and args.count_memory:
        parser.error('--compile measures the time and allocated memory of eager and compiled '
                     'steps; run --count-memory without it (a compiled graph keeps its saved '
                     'tensors out of the hooks that count them)')
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
    if args.compile:
        # own process and own, empty inductor cache: compile time from scratch, and no
        # dynamo cache shared between modes
        with tempfile.TemporaryDirectory(prefix='bench_inductor_') as cache:
            return _run_child([*argv, '--single-mode', mode],
                              env=dict(TORCHINDUCTOR_CACHE_DIR=cache))
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
    if info.get('compile'):
        what = f"eager and torch.compile({info['compile']}) steps alternating, {what} each"
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
    text = report(info, results)
    if data.get('partial'):
        text += ('\n\npartial run: still to measure ' + ', '.join(data['partial']['remaining'])
                 + ' (the same command with --resume)')
    return text


def report(info: dict, results: Dict[str, dict]) -> str:
    """The header and table(s) of a run: eager timings, counted memory or, for ``--compile``,
    eager and compiled side by side with the goal ratios.

    Args:
        info: The ``info`` part of a ``--json`` file.
        results: Its ``results``.
    """
    counted = any('saved_mb_' in k for r in results.values() for k in r)
    return header(info) + '\n\n' + (
        compile_report(results, info['dtypes']) if info.get('compile') else
        memory_table(results, info['dtypes']) if counted else
        table(results, info['dtypes'], info['device']))


def main() -> None:
    argv = [a for a in sys.argv[1:]]
    args = parse_args(argv)
    if args.from_json:
        print(render(args.from_json))
        return
    if args.single_mode:
        fn = count_memory if args.count_memory else measure_compiled if args.compile else \
            measure
        print(json.dumps(fn(args.single_mode, args)))
        return
    if args.memory_mode:
        print(json.dumps(measure_cpu_memory(args.memory_mode, args.memory_dtypes, args)))
        return
    info = _run_info(args)
    results: Dict[str, Dict[str, float]] = _resumed(args, info) if args.resume else {}
    for rep in range(args.repeat):
        for mode in args.modes:
            if rep == 0 and mode in results:
                print(f'[benchmark] {mode}: kept from {args.json}', flush=True)
                continue
            print(f'[benchmark] {mode} ({rep + 1}/{args.repeat}) ...', flush=True)
            res = _measure_mode(mode, argv, args, repeat=mode in results)
            if mode in results:  # keep the fastest median of the repeats
                for k, v in res.items():
                    if k.startswith(('train_ms', 'infer_ms', 'compile_s')):
                        results[mode][k] = min(results[mode].get(k, v), v)
            else:
                results[mode] = res
            if args.json and rep == 0 and len(results) < len(args.modes):
                _write_json(args, info, results, partial=True)
    results = {m: results[m] for m in args.modes}  # the command's order, resumed or not
    if args.compile:
        print(report(info, results))
    else:
        print(header(info) + '\n')
        print(memory_table(results, args.dtype) if args.count_memory else
              table(results, args.dtype, args.device))
    if args.json:
        _write_json(args, info, results)


#: What must match for --resume to keep a file's results (not the command line's spelling).
_SAME_RUN = ('device', 'torch', 'backbone', 'arch', 'size', 'batch', 'dtypes', 'iters',
             'warmup', 'repeat', 'with_cp', 'memory', 'compile')


def _run_info(args: argparse.Namespace) -> dict:
    """The ``info`` part of the JSON: device, versions and what is measured."""
    import mmcv
    import mmdet
    import mmengine
    info = dict(device=torch.cuda.get_device_name() if args.device.startswith('cuda') else
                f'CPU ({os.cpu_count()} cores)', torch=torch.__version__,
                mmengine=mmengine.__version__, mmcv=mmcv.__version__, mmdet=mmdet.__version__,
                memory='counted: state + saved activations' if args.count_memory else
                'peak of tensor bytes allocated during one steady step above those live '
                'before it (' + ('cuda max_memory_allocated' if args.device.startswith('cuda')
                                 else 'profiler allocation records') + '), eager and compiled '
                'alike; RSS and counted memory are not comparable for compiled graphs'
                if args.compile else
                'cuda max_memory_allocated' if args.device.startswith('cuda') else
                f'peak RSS above start, MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}',
                backbone=args.backbone, arch=args.arch_cfg,
                size=args.size, batch=args.batch, dtypes=args.dtype, iters=args.iters,
                warmup=args.warmup, repeat=args.repeat, with_cp=args.with_cp,
                command=' '.join(sys.argv))
    if args.compile:
        info.update(compile=args.compile_backend,
                    compiled='forward + loss (backward through AOTAutograd) and AdamW step; '
                    'inference: the re-parameterised forward under no_grad',
                    compile_time='wall seconds of the compiled calls until one compiles '
                    'nothing, own empty inductor cache per mode')
    # as the JSON holds it (tuples become lists): --from-json prints the same header
    return json.loads(json.dumps(info))


def _resumed(args: argparse.Namespace, info: dict) -> Dict[str, dict]:
    """The results an earlier run of the same measurement wrote to ``--json`` (none if the
    file does not exist); another measurement there is refused, not mixed in."""
    if not os.path.exists(args.json):
        return {}
    with open(args.json) as f:
        data = json.load(f)
    old = data.get('info', {})
    differ = [k for k in _SAME_RUN if old.get(k) != info.get(k)]
    if differ:
        raise SystemExit(f'--resume: {args.json} holds another measurement (differs in '
                         f'{", ".join(differ)}); write to another --json file')
    return {m: r for m, r in data.get('results', {}).items() if m in args.modes}


def _write_json(args: argparse.Namespace, info: dict, results: Dict[str, dict],
                partial: bool = False) -> None:
    """Write the JSON (atomically: an interrupted write keeps the previous file); a partial
    one lists the modes still to measure."""
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    data = dict(info=info, results=results)
    if args.compile:
        data['ratios'] = compile_ratios(results, args.dtype)
    if partial:
        data['partial'] = dict(remaining=[m for m in args.modes if m not in results],
                               resume=f'the same command with --resume')
    tmp = f'{args.json}.tmp-{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, args.json)

if __name__ == '__main__':
    main()
