"""Export a config + checkpoint (full, adapter-only, MiMi-pruned or re-parameterised) to ONNX,
re-parameterised, and check the file with onnxruntime against the eager model.

Usage: python tools/deployment/export_onnx.py CONFIG CKPT [--out FILE.onnx]
           [--part backbone|model] [--base-checkpoint PRETRAINED [--force-base]]
           [--shape H W] [--no-dynamic | --try-dynamic] [--opset N] [--atol 1e-4]

What is exported (``--part``): ``backbone`` (its feature maps) for every codebase; ``model``
(the default where it exports) is ``model(inputs, mode='tensor')``: an mmpretrain
``ImageClassifier``'s class scores (logits), an mmseg ``EncoderDecoder``'s decode-head logits
(at the head's resolution, not resized), an mmdet ``SingleStageDetector``'s raw head outputs
(no box decoding or NMS); two-stage and DETR-like detectors export only their backbone. The
input is the batch after the config's data preprocessor (normalised, channels in the model's
order). Needs the deploy extra: ``pip install mona_mm[deploy]`` (requirements/deploy.txt).

Height and width are dynamic where torch.export keeps them symbolic and the file gives the
eager model's numbers at a second size too; otherwise (and at once for Swin, Swin V2 and SAM,
see :data:`FIXED_SIZE_BACKBONES`) the tool says why and exports for the given size. The
file is written only after onnxruntime (CPU) reproduced the eager re-parameterised model
within ``--atol`` on random inputs; above it the tool exits non-zero and leaves ``--out``
untouched.
"""
import argparse
import copy
import importlib
import logging
import math
import os
import os.path as osp
import re
import shutil
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config, DictAction
from mmengine.registry import MODELS

import mona_mm  # noqa: F401  (registers our modules and the checkpoint allow-list)
from mona_mm.apis import init_model
from mona_mm.apis.inference import config_codebase
from mona_mm.models import reparameterize

PARTS = ('backbone', 'model')
DEPLOY_MODULES = ('onnx', 'onnxruntime', 'onnxscript')
DEPLOY_HINT = 'pip install mona_mm[deploy] (or pip install -r requirements/deploy.txt)'
#: Name of the single graph input.
INPUT_NAME = 'inputs'
#: Names of the whole model's outputs per codebase (more outputs: numbered).
MODEL_OUTPUTS = {'mmpretrain': 'cls_score', 'mmseg': 'seg_logits'}
#: Backbones (upstream classes, ours subclass them) whose dynamic export is known to fail,
#: slowly, with torch 2.14: they are exported for a fixed size unless --try-dynamic. Swin's
#: padding to whole windows and its shifted-window masks: torch.export took over 20 min on
#: the nano model at 224x224, and the files it did write (64x64) computed other values or
#: shapes at 96x80 (mmpretrain's, mmdet's; mmseg's has mmdet's code). SAM: its relative
#: positions are resized with a Python float of the size, which does not convert.
FIXED_SIZE_BACKBONES = {
    **dict.fromkeys(('mmpretrain.models.backbones.swin_transformer.SwinTransformer',
                     'mmdet.models.backbones.swin.SwinTransformer',
                     'mmseg.models.backbones.swin.SwinTransformer',
                     'mmpretrain.models.backbones.swin_transformer_v2.SwinTransformerV2'),
                    'Swin: its windows and masks follow the size in Python; a dynamic export '
                    'takes minutes to hours (and Swin V1\'s was wrong at other sizes)'),
    'mmpretrain.models.backbones.vit_sam.ViTSAM':
    'ViTSAM: its relative positions are resized by a Python float of the size',
}
#: Above this many bytes of weights the initializers go to FILE.onnx.data (protobuf's 2 GB).
EXTERNAL_DATA_BYTES = 2**31 - 2**26


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(
        description='Export a config and checkpoint (full, adapter-only, MiMi-pruned or '
        're-parameterised) to ONNX in its re-parameterised form, with dynamic height and width '
        'where the model allows it, and check the file with onnxruntime against the eager '
        'model.')
    parser.add_argument('config', help='Config file the checkpoint was trained with.')
    parser.add_argument('checkpoint',
                        help='Checkpoint of any kind: full (runner), adapter-only, '
                        'MiMi-pruned or re-parameterised (deploy).')
    parser.add_argument('--out', metavar='FILE.onnx',
                        help='ONNX file to write (default: the checkpoint\'s path with '
                        '.onnx, plus -backbone for --part backbone).')
    parser.add_argument('--base-checkpoint', metavar='PRETRAINED',
                        help='Pretrained backbone for an adapter-only checkpoint; by default '
                        'the one the checkpoint records, else the backbone init_cfg of the '
                        'config. It must have the digest the checkpoint records for its base '
                        '(the same weights; refused otherwise).')
    parser.add_argument('--force-base', action='store_true',
                        help='Compose an adapter-only checkpoint with --base-checkpoint even '
                        'when its tensors differ from the base the checkpoint records (the '
                        'model is then not the trained one).')
    parser.add_argument('--part', choices=PARTS,
                        help='What to export: the backbone (feature maps), or the model\'s '
                        'mode=\'tensor\' forward (classifier scores, segmentor logits, '
                        'single-stage detector head outputs). Default: the model where its '
                        'codebase exports it, else the backbone.')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='Input height and width to export and check at (default: the '
                        'config\'s model.data_preprocessor.size, else 224 224).')
    parser.add_argument('--batch-size', type=int, default=1,
                        help='Batch size of the input, fixed in the file (default: 1).')
    parser.add_argument('--no-dynamic', action='store_true',
                        help='Export for the --shape size only (faster to export; by default '
                        'height and width are dynamic where the model allows it).')
    parser.add_argument('--try-dynamic', action='store_true',
                        help='Try dynamic height and width also for the backbones known to '
                        'export only for a fixed size (Swin, Swin V2, SAM): slow, and the file '
                        'is checked at two sizes as always.')
    parser.add_argument('--opset', type=int, metavar='N',
                        help='ONNX opset version (default: the torch exporter\'s own).')
    parser.add_argument('--atol', type=float, default=1e-4,
                        help='Largest absolute difference allowed between onnxruntime and the '
                        'eager re-parameterised model (default: 1e-4, fp32).')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='Override config entries, key=value pairs such as '
                        'model.backbone.out_indices=[3].')
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error('--batch-size must be >= 1')
    if args.no_dynamic and args.try_dynamic:
        parser.error('--no-dynamic and --try-dynamic contradict each other')
    if args.shape and min(args.shape) < 1:
        parser.error('--shape needs two positive sizes')
    if not args.atol >= 0:
        parser.error('--atol must be >= 0')
    return args


def require_deploy_extra() -> None:
    """Import the deploy extra's packages, or exit naming the missing ones and the install.

    Raises:
        SystemExit: When one of :data:`DEPLOY_MODULES` cannot be imported.
    """
    missing = []
    for name in DEPLOY_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise SystemExit(f'ONNX export needs {", ".join(missing)} (the deploy extra, not '
                         f'installed): {DEPLOY_HINT}')


class TensorForward(nn.Module):
    """``model(inputs, mode='tensor')`` as a module of one tensor argument, which is what
    torch.export traces (no data samples, no post-processing).

    Args:
        model: An OpenMMLab model whose ``forward`` takes ``mode='tensor'``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> Any:
        return self.model(inputs, mode='tensor')


def _model_class(cfg: Config) -> Optional[type]:
    """The class ``cfg.model`` builds, resolved in the config's scope without building it."""
    kind = cfg.model.get('type')
    if not isinstance(kind, str):
        return kind if isinstance(kind, type) else None
    codebase = config_codebase(cfg)
    # the codebase's modules register lazily; the class is known only once they have
    importlib.import_module(f'{codebase}.utils').register_all_modules(init_default_scope=False)
    # the root registry finds a child's class only by its scoped name
    return MODELS.get(kind if '.' in kind else f'{codebase}.{kind}')


def whole_model_refusal(cfg: Config) -> Optional[str]:
    """Why ``--part model`` cannot export the config's model, or None when it can.

    ``mode='tensor'`` is one tensor in, tensors out only for these classes: two-stage and
    DETR-like detectors need data samples (image sizes) for their proposals and queries.

    Args:
        cfg: The loaded config.
    """
    codebase = config_codebase(cfg)
    cls = _model_class(cfg)
    if codebase == 'mmpretrain':
        from mmpretrain.models.classifiers import ImageClassifier as Whole
    elif codebase == 'mmseg':
        from mmseg.models.segmentors import EncoderDecoder as Whole
    else:
        from mmdet.models.detectors import SingleStageDetector as Whole
    if isinstance(cls, type) and issubclass(cls, Whole):
        return None
    name = getattr(cls, '__name__', cfg.model.get('type'))
    return (f'{codebase} {name}: its mode=\'tensor\' forward is not one tensor in, tensors out '
            f'(only {Whole.__name__} models export whole); use --part backbone')


def default_shape(cfg: Config) -> Tuple[int, int]:
    """The size to export at when ``--shape`` is not given: the config's fixed input size
    (``model.data_preprocessor.size``, mmseg's crop size), else 224 x 224.

    Args:
        cfg: The loaded config.
    """
    size = (cfg.model.get('data_preprocessor') or {}).get('size') or \
        (cfg.get('data_preprocessor') or {}).get('size')
    if size and len(size) == 2:
        return int(size[0]), int(size[1])
    return 224, 224


def second_shape(shape: Sequence[int]) -> Tuple[int, int]:
    """Where a dynamic file is traced and checked besides ``shape``: another height and
    another width (x1.5 and x1.25, rounded up to multiples of 16, the usual patch size), so
    that neither axis can pass by coincidence.

    Args:
        shape: ``(H, W)`` the file is exported for.
    """
    return (16 * math.ceil(shape[0] * 1.5 / 16), 16 * math.ceil(shape[1] * 1.25 / 16))


def flatten(outputs: Any) -> List[torch.Tensor]:
    """The tensors of a (nested) output in the order torch.export flattens them.

    Args:
        outputs: A tensor, or tuples, lists and dicts of them.
    """
    if torch.is_tensor(outputs):
        return [outputs]
    if isinstance(outputs, dict):
        return [t for k in outputs for t in flatten(outputs[k])]
    if isinstance(outputs, (tuple, list)):
        return [t for o in outputs for t in flatten(o)]
    raise TypeError(f'cannot export an output of type {type(outputs).__name__}')


def export_file(module: nn.Module, example: torch.Tensor, path: str, dynamic: bool,
                opset: Optional[int], output_names: Optional[List[str]]) -> None:
    """Export ``module`` with torch's exporter (torch.export, then the ONNX translation).

    Args:
        module: The module to export, in eval mode.
        example: The input it is traced with.
        path: The ``.onnx`` file to write.
        dynamic: Let height and width be symbolic (``Dim.AUTO``: torch.export keeps them so
            where the code allows it and specialises them otherwise).
        opset: ONNX opset version; None: the exporter's default.
        output_names: Names of the flattened outputs; None: the exporter's.
    """
    dims = ({2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}, ) if dynamic else None
    with torch.no_grad():
        # non-strict: traces the Python as it runs (the adapters' forward hooks included)
        program = torch.export.export(module, (example, ), dynamic_shapes=dims, strict=False)
    weight_bytes = sum(t.numel() * t.element_size()
                       for t in list(module.parameters()) + list(module.buffers()))
    # onnxscript's optimizer warns once per multi-output op it leaves unfolded (harmless)
    optimizer_log = logging.getLogger('onnxscript.optimizer')
    level = optimizer_log.level
    optimizer_log.setLevel(logging.ERROR)
    try:
        torch.onnx.export(program, (example, ), path, input_names=[INPUT_NAME],
                          output_names=output_names, opset_version=opset,
                          external_data=weight_bytes > EXTERNAL_DATA_BYTES, verbose=False)
    finally:
        optimizer_log.setLevel(level)


def dynamic_axes_of(path: str) -> List[int]:
    """Axes of the file's input that are symbolic (have a ``dim_param``).

    Args:
        path: An ONNX file.
    """
    import onnx
    graph = onnx.load(path, load_external_data=False).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    return [i for i, d in enumerate(dims) if d.dim_param or not d.HasField('dim_value')]


def max_abs_diff(session, module: nn.Module, inputs: torch.Tensor) -> float:
    """Largest absolute difference between the file (an onnxruntime session) and ``module``
    on ``inputs``, over every output; inf when the outputs' number or shapes differ and NaN
    when either side is not finite (both fail any tolerance check).

    Args:
        session: ``onnxruntime.InferenceSession`` of the file.
        module: The eager module it was exported from.
        inputs: One input batch.
    """
    try:
        with torch.no_grad():
            expected = [t.detach().float().numpy() for t in flatten(module(inputs))]
    except Exception as error:  # then the size is the model's limit, not the file's
        raise RuntimeError(f'the eager {type(module).__name__} does not run on a '
                           f'{"x".join(map(str, inputs.shape))} input either '
                           f'({_reason(error)})') from None
    got = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})
    if len(got) != len(expected) or any(g.shape != e.shape for g, e in zip(got, expected)):
        return math.inf
    diffs = [float(np.abs(g.astype(np.float64) - e).max()) if e.size else 0.0
             for g, e in zip(got, expected)]
    return math.nan if any(math.isnan(d) for d in diffs) else max(diffs)


def check_file(path: str, module: nn.Module, shapes: Sequence[Tuple[int, int]],
               batch_size: int) -> Dict[Tuple[int, int], float]:
    """Run the file with onnxruntime on the CPU at each size and compare with ``module``.

    Args:
        path: The ONNX file.
        module: The eager module it was exported from.
        shapes: ``(H, W)`` sizes to check at.
        batch_size: Images per input.

    Returns:
        ``{(H, W): max abs difference}``.
    """
    import onnx
    import onnxruntime as ort
    onnx.checker.check_model(path)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # a failing run raises; its log line would repeat it
    session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    generator = torch.Generator().manual_seed(0)
    diffs = {}
    for h, w in shapes:
        inputs = torch.randn(batch_size, 3, h, w, generator=generator)
        diffs[(h, w)] = max_abs_diff(session, module, inputs)
    return diffs


def _reason(error: BaseException) -> str:
    """The innermost cause of an error, one line (the exporter wraps the cause in a page of
    generic advice)."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = re.sub(r'\x1b\[[0-9;]*m', '', str(error)).strip().splitlines()
    line = lines[0] if lines else ''
    return f'{type(error).__name__}: {line[:240] + "..." if len(line) > 240 else line}'


def _fmt(diffs: Dict[Tuple[int, int], float], batch_size: int) -> str:
    return ', '.join(f'{d:.2e} at {batch_size}x3x{h}x{w}' for (h, w), d in diffs.items())


def within(diffs: Dict[Tuple[int, int], float], atol: float) -> bool:
    """Whether every difference is at most ``atol`` (NaN is not).

    Args:
        diffs: As :func:`check_file` returns them.
        atol: The tolerance.
    """
    return all(d <= atol for d in diffs.values())


def known_fixed_size(module: nn.Module) -> Optional[str]:
    """Why ``module`` (a backbone, or a model with one) is exported for a fixed size without
    trying dynamic height and width first, or None (see :data:`FIXED_SIZE_BACKBONES`).

    Args:
        module: The module to export.
    """
    backbone = getattr(getattr(module, 'model', module), 'backbone', None) or module
    for cls in type(backbone).__mro__:
        reason = FIXED_SIZE_BACKBONES.get(f'{cls.__module__}.{cls.__qualname__}')
        if reason:
            return reason
    return None


def export_checked(module: nn.Module, path: str, shape: Tuple[int, int], batch_size: int = 1,
                   dynamic: bool = True, opset: Optional[int] = None, atol: float = 1e-4,
                   output_names: Optional[List[str]] = None
                   ) -> Tuple[bool, Dict[Tuple[int, int], float], Optional[str]]:
    """Export ``module`` to ``path`` and check the file with onnxruntime.

    With ``dynamic``, height and width are exported symbolic first, traced at
    :func:`second_shape` (not at ``shape``: a model may skip a step, e.g. a ViT's
    position-embedding resize, at its default size, which would then be missing at every
    other size); that file is kept only if its input axes stayed symbolic and it reproduces
    ``module`` within ``atol`` at both sizes (code that reads a size as a Python number can
    leave a file that runs at another size but computes something else). Otherwise the
    module is exported again for ``shape`` only.

    Args:
        module: The module to export, in eval mode, one ``(B, 3, H, W)`` tensor in.
        path: The ``.onnx`` file to write; its folder should hold nothing else (a failed
            dynamic try is removed from it).
        shape: ``(H, W)`` to export and check at.
        batch_size: Images per input (fixed in the file).
        dynamic: Try dynamic height and width first.
        opset: ONNX opset version; None: the exporter's default.
        atol: Largest max abs difference a dynamic file may have to be kept.
        output_names: Names of the flattened outputs; None: the exporter's.

    Returns:
        ``(dynamic, {(H, W): max abs difference}, why it is not dynamic or None)``; the
        caller decides whether the differences pass (:func:`within`).

    Raises:
        SystemExit: When even the fixed-size export fails.
    """
    generator = torch.Generator().manual_seed(1)
    reason = 'dynamic height and width not tried'
    if dynamic:
        other = second_shape(shape)
        print(f'exporting with dynamic height and width, traced at {batch_size}x3x{other[0]}x'
              f'{other[1]} (--no-dynamic exports faster, for one size)', flush=True)
        try:
            example = torch.randn(batch_size, 3, *other, generator=generator)
            try:
                with torch.no_grad():
                    module(example)
            except Exception as error:  # the model's own limit: no trace can do better
                raise RuntimeError(f'the eager {type(module).__name__} does not run at '
                                   f'{other[0]}x{other[1]} ({_reason(error)})') from None
            # a copy: tracing can leave symbolic sizes in attributes a forward caches
            export_file(copy.deepcopy(module), example, path, True, opset, output_names)
            if not {2, 3} <= set(dynamic_axes_of(path)):
                reason = 'torch.export specialised height and width to the example size'
            else:
                diffs = check_file(path, module, [shape, other], batch_size)
                if within(diffs, atol):
                    return True, diffs, None
                reason = f'the dynamic file differs from the eager model by ' \
                    f'{_fmt(diffs, batch_size)}'
        except Exception as error:  # any failure of the dynamic try falls back to fixed
            reason = _reason(error)
        print(f'dynamic height/width: not supported for this model ({reason}); exporting for '
              f'fixed {shape[0]}x{shape[1]}', flush=True)
        folder = osp.dirname(osp.abspath(path))
        for name in os.listdir(folder):  # nothing of the dynamic try survives
            os.remove(osp.join(folder, name))
    example = torch.randn(batch_size, 3, *shape, generator=generator)
    try:
        export_file(module, example, path, False, opset, output_names)
    except Exception as error:
        raise SystemExit(f'torch could not export {type(module).__name__} to ONNX: '
                         f'{_reason(error)}') from error
    return False, check_file(path, module, [shape], batch_size), reason


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Export, check, and write the file only once it reproduces the eager model.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).
    """
    args = parse_args(argv)
    require_deploy_extra()  # before minutes of loading, not after
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        codebase = config_codebase(cfg)
        refusal = whole_model_refusal(cfg)
    except ValueError as error:
        raise SystemExit(f'{args.config}: {error}') from error
    part = args.part or ('model' if refusal is None else 'backbone')
    if part == 'model' and refusal is not None:
        raise SystemExit(f'--part model: {refusal}')
    shape = tuple(args.shape) if args.shape else default_shape(cfg)
    out = args.out or (osp.splitext(args.checkpoint)[0] +
                       ('-backbone' if part == 'backbone' else '') + '.onnx')

    # every checkpoint kind, in the structure it was saved in (pruned widths, deploy form)
    model = init_model(cfg, args.checkpoint, base_checkpoint=args.base_checkpoint,
                       force_base=args.force_base)
    done = reparameterize(model)
    if part == 'backbone' and getattr(model, 'backbone', None) is None:
        raise SystemExit(f'{args.config}: the model has no backbone to export; use --part model')
    module = (model.backbone if part == 'backbone' else TensorForward(model)).eval()
    print(f'{args.checkpoint}: {model.checkpoint_kind} checkpoint; re-parameterised '
          f'{done["mona"]} Mona, merged {done["lora"]} LoRA; exporting the {part} '
          f'({codebase})', flush=True)
    probe = torch.randn(args.batch_size, 3, *shape, generator=torch.Generator().manual_seed(1))
    try:
        with torch.no_grad():
            raw = module(probe)
    except Exception as error:  # say so before exporting anything
        raise SystemExit(f'the {part} does not run on a {args.batch_size}x3x{shape[0]}x'
                         f'{shape[1]} input ({_reason(error)}): choose another --shape') \
            from error
    try:
        outputs = flatten(raw)
    except TypeError as error:
        raise SystemExit(f'the {part} returns what ONNX cannot hold ({error}); '
                         'use --part backbone') from error
    names = [MODEL_OUTPUTS[codebase]] if part == 'model' and codebase in MODEL_OUTPUTS \
        and len(outputs) == 1 else [f'out{i}' for i in range(len(outputs))]

    folder = osp.dirname(osp.abspath(out))
    os.makedirs(folder, exist_ok=True)
    # written beside OUT and moved into place only once checked: a failed export never
    # replaces a good file
    tmp = tempfile.mkdtemp(prefix='.export_onnx-', dir=folder)
    try:
        start = time.time()
        path = osp.join(tmp, osp.basename(out))
        dynamic = not args.no_dynamic
        known = known_fixed_size(module)
        if dynamic and known and not args.try_dynamic:
            print(f'dynamic height/width: not supported for this model ({known}; '
                  f'--try-dynamic tries anyway); exporting for fixed {shape[0]}x{shape[1]}')
            dynamic = False
        dynamic, diffs, _ = export_checked(module, path, shape, args.batch_size, dynamic,
                                           args.opset, args.atol, names)
        if not within(diffs, args.atol):
            raise SystemExit(f'onnxruntime differs from the eager re-parameterised {part} by '
                             f'{_fmt(diffs, args.batch_size)}: above --atol {args.atol:g}; '
                             f'nothing written to {out}')
        for name in sorted(os.listdir(tmp)):  # FILE.onnx (+ FILE.onnx.data when large)
            os.replace(osp.join(tmp, name), osp.join(folder, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    import onnx
    opset = next(o.version for o in onnx.load(out, load_external_data=False).opset_import
                 if o.domain in ('', 'ai.onnx'))
    size = 'dynamic' if dynamic else f'fixed {shape[0]}x{shape[1]}'
    print(f'wrote {out} ({time.time() - start:.0f} s): the {part}, opset {opset}, input '
          f'{INPUT_NAME!r} {args.batch_size}x3xHxW with {size} height/width, outputs '
          f'{", ".join(names)}')
    print(f'onnxruntime vs eager max abs diff: {_fmt(diffs, args.batch_size)} '
          f'(tolerance {args.atol:g})')


if __name__ == '__main__':
    main()
