"""Summarise PEFT configs: method, trainable parameters, adapter-only checkpoint size, GFLOPs.

Usage: python tools/analysis_tools/peft_summary.py CONFIG [CONFIG ...] [--markdown]
           [--checkpoint CKPT ...] [--shape H W] [--no-flops]

``--checkpoint`` (one per config, or one for all) loads a checkpoint before counting, e.g. a
pruned one whose adapters are smaller than the config says.
"""
import argparse
import io
import os.path as osp
from typing import List, Optional, Tuple

import torch
from mmengine.config import Config

import mona_mm  # noqa: F401
from mona_mm.utils import adapter_state_dict, build_model_from_cfg, count_trainable


def test_size(cfg: Config) -> Tuple[int, int]:
    """The (H, W) the config tests at: crop size (seg), max Resize scale (det), crop (cls)."""
    if cfg.get('crop_size'):
        return tuple(cfg.crop_size)
    pipeline = cfg.get('test_pipeline') or cfg.test_dataloader.dataset.get('pipeline', [])
    for t in pipeline:
        if t['type'] in ('CenterCrop', ) and t.get('crop_size'):
            s = t['crop_size']
            return (s, s) if isinstance(s, int) else (s[1], s[0])
    for t in pipeline:
        if t['type'] in ('Resize', 'ResizeEdge') and t.get('scale'):
            s = t['scale']
            return (s, s) if isinstance(s, int) else (min(s), max(s))
    return (224, 224)


class _BoundSamples(torch.nn.Module):
    """``model._forward(x, data_samples)`` with the samples bound (as mmdet's get_flops)."""

    def __init__(self, model: torch.nn.Module, data_samples: list) -> None:
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, x: torch.Tensor):
        return self.model._forward(x, self.data_samples)


def flops_of(model: torch.nn.Module, cfg: Config, hw: Tuple[int, int]) -> Optional[float]:
    """GFLOPs of one forward at ``hw`` in tensor mode (mmengine's FlopAnalyzer)."""
    from mmengine.analysis import FlopAnalyzer
    H, W = hw
    x = torch.zeros(1, 3, H, W)
    scope = cfg.get('default_scope')
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        ds = DetDataSample(metainfo=dict(img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W),
                                         batch_input_shape=(H, W), scale_factor=(1., 1.)))
        model = _BoundSamples(model, [ds])  # the jit tracer takes tensors only
    inputs = (x, )
    model.eval()
    with torch.no_grad():
        analyzer = FlopAnalyzer(model, inputs)
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        return analyzer.total() / 1e9


def summarise(path: str, checkpoint: Optional[str], shape: Optional[List[int]],
              flops: bool) -> dict:
    cfg = Config.fromfile(path)
    model = build_model_from_cfg(cfg, pretrained=False)  # no weights needed to count
    if checkpoint:
        from mmengine.runner import load_checkpoint

        from mona_mm.pruning import apply_checkpoint_structure
        apply_checkpoint_structure(model, checkpoint)  # MiMi-pruned: shrink first
        load_checkpoint(model, checkpoint, map_location='cpu', strict=False)
    c = count_trainable(model)
    buf = io.BytesIO()
    torch.save(adapter_state_dict(model), buf)
    method = getattr(getattr(model.backbone, 'peft_method', None), 'name', '-')
    hw = tuple(shape) if shape else test_size(cfg)
    g = None
    if flops:
        try:
            g = flops_of(model, cfg, hw)
        except Exception as e:  # report, keep summarising the rest
            print(f'[peft_summary] FLOPs failed for {path}: {type(e).__name__}: {e}')
    return dict(config=osp.splitext(osp.basename(path))[0], method=method,
                backbone=c['backbone_trainable'], other=c['other_trainable'],
                total=c['trainable'], pct=100.0 * c['trainable'] / c['total'],
                size_mb=buf.tell() / 2**20, hw=hw, gflops=g)


def _fmt_flops(g: Optional[float]) -> str:
    if g is None:
        return '-'
    return f'{g:.1f}' if g >= 100 else f'{g:.3g}'


def main() -> None:
    parser = argparse.ArgumentParser(
        description='Summarise PEFT configs: method, trainable parameters, adapter-only '
        'checkpoint size and GFLOPs, one row per config.')
    parser.add_argument('configs', nargs='+', metavar='CONFIG',
                        help='Config files to summarise; the same file may be given twice, '
                        'e.g. with two checkpoints.')
    parser.add_argument('--checkpoint', nargs='+', default=[], metavar='CKPT',
                        help='Load a checkpoint before counting, one for every config or one '
                        'for all (e.g. a MiMi-pruned one, whose adapters are smaller than the '
                        'config says).')
    parser.add_argument('--shape', nargs=2, type=int, metavar=('H', 'W'),
                        help='Input height and width of the FLOPs count (default: the size the '
                        'config tests at).')
    parser.add_argument('--no-flops', action='store_true',
                        help='Skip the FLOPs count, which is the slow part.')
    parser.add_argument('--markdown', action='store_true',
                        help='Print a markdown table instead of aligned columns.')
    args = parser.parse_args()
    if args.checkpoint and len(args.checkpoint) not in (1, len(args.configs)):
        parser.error('give one --checkpoint, or one per config')
    rows = []
    for i, path in enumerate(args.configs):
        ckpt = None
        if args.checkpoint:
            ckpt = args.checkpoint[i if len(args.checkpoint) > 1 else 0]
        rows.append(summarise(path, ckpt, args.shape, not args.no_flops))
    head = ['config', 'method', 'backbone trainable', 'neck+heads trainable',
            'total trainable', '% of model', 'adapter ckpt (MB)', 'test size', 'GFLOPs']
    lines = []
    for r in rows:
        lines.append([r['config'], r['method'], f"{r['backbone']:,}", f"{r['other']:,}",
                      f"{r['total']:,}", f"{r['pct']:.2f}", f"{r['size_mb']:.2f}",
                      f"{r['hw'][0]}x{r['hw'][1]}",
                      _fmt_flops(r['gflops'])])
    if args.markdown:
        print('| ' + ' | '.join(head) + ' |')
        print('|' + '|'.join('---' for _ in head) + '|')
        for ln in lines:
            print('| ' + ' | '.join(ln) + ' |')
    else:
        widths = [max(len(h), *(len(ln[i]) for ln in lines)) for i, h in enumerate(head)]
        print('  '.join(h.ljust(w) for h, w in zip(head, widths)))
        for ln in lines:
            print('  '.join(c.ljust(w) for c, w in zip(ln, widths)))


if __name__ == '__main__':
    main()
