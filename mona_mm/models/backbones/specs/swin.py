"""Swin Transformer (V1) of mmdet, mmseg and mmpretrain: one spec, their blocks are alike.

Block forward (all three): ``x = x + attn(norm1(x), hw_shape)`` then
``x = ffn(norm2(x), identity=x)``; ``attn`` ends with drop path, ``ffn`` applies drop path to
``gamma2(layers(.))`` before its residual add.
"""
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import MMLogger
from torch import Tensor

from ..spec import AdapterPoint, BackboneSpec, register_spec

#: The Mona authors' code (github.com/Leiyi-Hu/mona, ``swin_transformer_<method>.py``, the
#: same file in their mmdet 2.x, mmseg 0.x and mmcls 0.x copies) keeps Microsoft's Swin names
#: and adds the adapters of a block as ``my_module_1`` / ``my_module_2``: which adapter point
#: each is here, per method (told apart by what the checkpoint holds, see
#: :func:`_authors_method`).
AUTHORS_POINTS: Dict[str, Dict[str, str]] = {
    # x = x + attn(norm1(x)); x = my_module_1(x); x = x + mlp(norm2(x)); x = my_module_2(x)
    'Mona': dict(my_module_1='post_attn', my_module_2='post_mlp'),
    # x = x + my_module_1(attn(norm1(x))); x = x + my_module_2(mlp(norm2(x)))
    'Adapter': dict(my_module_1='attn_out', my_module_2='mlp_out'),
    # x = x + mlp(norm2(x)) + my_module_1(x)  (ours reads norm2(x), as AdaptFormer's paper)
    'AdaptFormer': dict(my_module_1='mlp_parallel'),
}

#: Their parameter names inside one adapter (module paths; ``weight``/``bias`` follow) ->
#: ours (:class:`~mona_mm.models.peft.mona.Mona`,
#: :class:`~mona_mm.models.peft.adapter.BottleneckAdapter`). Their ``dropout`` and GELU hold
#: no tensors.
AUTHORS_PARAMS: Dict[str, Dict[str, str]] = {
    'Mona': {
        'project1': 'project1',
        'project2': 'project2',
        'norm': 'norm',
        'gamma': 'gamma',
        'gammax': 'gammax',
        'adapter_conv.conv1': 'adapter_conv.convs.0',  # depthwise 3x3
        'adapter_conv.conv2': 'adapter_conv.convs.1',  # depthwise 5x5
        'adapter_conv.conv3': 'adapter_conv.convs.2',  # depthwise 7x7
        'adapter_conv.projector': 'adapter_conv.projector',  # the 1x1 conv
    },
    'Adapter': dict(project1='down', project2='up'),
    'AdaptFormer': dict(project1='down', project2='up'),
}

_AUTHORS_MODULE = re.compile(r'^(stages\.\d+\.blocks\.\d+)\.(my_module_[12])\.(.+)$')
# their LoRA (loralib's MergedLinear on q and v of attn.qkv, r=64, lora_alpha=1) keeps 2-D
# lora_A (2r, C) and lora_B (2C, r); ours are stacked per part: (2, r, C) and (2, C, r)
_LORA = re.compile(r'^stages\.\d+\.blocks\.\d+\.attn\.w_msa\.qkv\.lora_[AB]$')
_AUTHORS_HINT = ("the Mona authors' code (github.com/Leiyi-Hu/mona: `my_module_1`/"
                 '`my_module_2` in every Swin block)')


def _resize_tables(sd: Dict[str, Tensor], backbone: nn.Module) -> None:
    """Bicubic-resize relative position tables to this window size, as mmdet's and mmseg's
    Swin ``init_weights`` do (mmpretrain's Swin resizes in its own load hook); the resized
    tables' index buffers are dropped (the model keeps its own)."""
    own = backbone.state_dict()
    for k, table in list(sd.items()):
        if 'relative_position_bias_table' not in k or k not in own:
            continue
        L1, nH1 = table.shape
        L2, nH2 = own[k].shape
        if nH1 != nH2 or L1 == L2:
            continue
        S1, S2 = int(L1**0.5), int(L2**0.5)
        resized = F.interpolate(table.permute(1, 0).reshape(1, nH1, S1, S1).float(),
                                size=(S2, S2), mode='bicubic')
        sd[k] = resized.view(nH2, L2).permute(1, 0).contiguous().to(table.dtype)
        sd.pop(k.replace('bias_table', 'index'), None)


def _resize_abs_pos_embed(sd: Dict[str, Tensor], backbone: nn.Module) -> None:
    """Resize a square absolute position embedding (1, L, C) to this model's with
    mmpretrain's ``resize_pos_embed`` (mmdet's and mmseg's Swin have no resize)."""
    from mmpretrain.models.utils import resize_pos_embed
    key = 'absolute_pos_embed'
    own = getattr(backbone, key, None)
    if key not in sd or own is None or sd[key].shape == own.shape:
        return
    src = sd[key]
    side, dst = int(round(src.shape[1]**0.5)), int(round(own.shape[1]**0.5))
    if src.dim() != 3 or own.dim() != 3 or side * side != src.shape[1] or \
            dst * dst != own.shape[1]:
        raise ValueError(f'absolute_pos_embed: cannot resize {tuple(src.shape)} to '
                         f'{tuple(own.shape)}')
    sd[key] = resize_pos_embed(src, (side, side), (dst, dst), 'bicubic', 0)


def _upstream_resize(sd: Dict[str, Tensor], backbone: nn.Module) -> None:
    """mmpretrain's Swin resizes tables and the absolute embedding in its own load hooks:
    run those same hooks here, so the checkpoint is in shape before it is checked."""
    own = backbone.state_dict()
    for k in [k for k in sd if k.endswith('relative_position_bias_table') and k in own]:
        index = k.replace('bias_table', 'index')
        if sd[k].shape != own[k].shape and index not in sd and index in own:
            sd[index] = own[index]  # the hook deletes the index of a resized table
    backbone._prepare_relative_position_bias_table(sd, '')
    if hasattr(backbone, '_prepare_abs_pos_embed') and 'absolute_pos_embed' in sd:
        backbone._prepare_abs_pos_embed(sd, '')


def _authors_method(sd: Dict[str, Tensor]) -> Optional[str]:
    """Which method of the Mona authors' code the ``my_module_*`` tensors of ``sd`` (keys
    after the Microsoft conversion) belong to: Mona has depthwise convs and gammas, Adapter
    has two bottlenecks a block, AdaptFormer one; None if there are none."""
    found = [m.group(2, 3) for m in map(_AUTHORS_MODULE.match, sd) if m]
    if not found:
        return None
    if any(rest.startswith('adapter_conv.') or rest in ('gamma', 'gammax')
           for _, rest in found):
        return 'Mona'
    return 'Adapter' if any(name == 'my_module_2' for name, _ in found) else 'AdaptFormer'


def _rename_authors_adapters(sd: Dict[str, Tensor], backbone: nn.Module,
                             method: str) -> Dict[str, Tensor]:
    """Rename the authors' ``<block>.my_module_<i>.*`` tensors to this backbone's
    ``<block>.adapters.<point>.*`` (:data:`AUTHORS_POINTS`, :data:`AUTHORS_PARAMS`); refuse,
    saying what to build, if this backbone has no such adapters or other widths."""
    points, params = AUTHORS_POINTS[method], AUTHORS_PARAMS[method]
    own = backbone.state_dict()
    out = OrderedDict()
    unfit: List[str] = []
    width = None
    for k, v in sd.items():
        match = _AUTHORS_MODULE.match(k)
        if match:
            block, module, rest = match.groups()
            path, _, leaf = rest.rpartition('.')
            if module in points and rest in params:
                inner = params[rest]
            elif module in points and path in params:
                inner = f'{params[path]}.{leaf}'
            else:
                raise ValueError(f"{k}: not a tensor of the authors' {method} (their "
                                 f'{sorted(points)} hold {sorted(params)}); a checkpoint of '
                                 f'{_AUTHORS_HINT} edited by hand?')
            if rest == 'project1.weight':
                width = v.shape[0]
            theirs, k = k, f'{block}.adapters.{points[module]}.{inner}'
            if k not in own:
                unfit.append(f'{theirs} (-> {k}): not in this backbone')
            elif own[k].shape != v.shape:
                unfit.append(f'{theirs} (-> {k}): checkpoint {tuple(v.shape)} vs model '
                             f'{tuple(own[k].shape)}')
        out[k] = v
    if unfit:
        cfg = getattr(backbone, 'peft_cfg', None) or {}
        raise ValueError(
            f"this checkpoint holds the {method} adapters of {_AUTHORS_HINT}, hidden width "
            f"{width}, which do not fit this backbone (built with peft={cfg.get('type')!r}): "
            f'{len(unfit)} tensors, e.g. ' + '; '.join(unfit[:3]) + '. Build the backbone '
            f"with peft=dict(type='{method}', hidden_dims={width}) to load them.")
    if method == 'AdaptFormer':
        MMLogger.get_current_instance().warning(
            "loading the AdaptFormer adapters of the Mona authors' code: their adapter reads "
            'the block input x, this AdaptFormer reads norm2(x) (as AdaptFormer\'s paper), so '
            "the outputs differ from their model's")
    return out


def _reshape_authors_lora(sd: Dict[str, Tensor], backbone: nn.Module) -> bool:
    """Bring 2-D ``attn.w_msa.qkv.lora_A`` (2r, C) / ``lora_B`` (2C, r) of the authors'
    LoRA (loralib's ``MergedLinear``, ``enable_lora=[True, False, True]``: rows q then v,
    scaling ``lora_alpha / r`` = 1/r) into this backbone's stacked (2, r, C) / (2, C, r), in
    place; refuse if this backbone is not LoRA on q and v with that rank and ``alpha=1``.
    Returns whether there were any."""
    keys = [k for k, v in sd.items() if _LORA.match(k) and v.dim() == 2]
    own = backbone.state_dict() if keys else {}
    for k in keys:
        v = sd[k]
        is_a = k.endswith('lora_A')
        rank = v.shape[0] // 2 if is_a else v.shape[1]
        dims = v.shape[1] if is_a else v.shape[0] // 2
        lora = backbone.get_submodule(k.rsplit('.', 1)[0]) if k in own else None
        if lora is None or tuple(getattr(lora, 'parts', ())) != (0, 2) or \
                getattr(lora, 'rank', None) != rank or getattr(lora, 'alpha', None) != 1:
            cfg = getattr(backbone, 'peft_cfg', None) or {}
            raise ValueError(
                f"{k}: this checkpoint holds the LoRA of the Mona authors' code (github.com/"
                f'Leiyi-Hu/mona: loralib on q and v of attn.qkv, rank {rank}, lora_alpha 1), '
                f'which does not fit this backbone (built with peft={cfg}). Build the '
                f"backbone with peft=dict(type='LoRA', rank={rank}, alpha=1, parts='qv') to "
                'load it.')
        sd[k] = v.reshape(2, rank, dims) if is_a else v.reshape(2, dims, rank)
    return bool(keys)


def _from_microsoft(sd: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Microsoft's key names -> mmdet's, with mmdet's ``swin_converter``. Keys under an
    ``adapters`` module (this package's names) bypass it: it would read ``post_attn.`` as an
    attention key."""
    from mmdet.models.backbones.swin import swin_converter
    ours = [k for k in sd if '.adapters.' in k]
    converted = swin_converter(OrderedDict((k, v) for k, v in sd.items() if k not in ours))
    out = OrderedDict((k[len('backbone.'):], v) for k, v in converted.items())
    for k in ours:
        out[k.replace('layers.', 'stages.', 1) if k.startswith('layers.') else k] = sd[k]
    return out


def convert_swin(sd: Dict[str, Tensor], backbone: nn.Module) -> Tuple[Dict[str, Tensor], str]:
    """Bring a Swin state dict into the layout of ``backbone`` (mmdet/mmseg/mmpretrain Swin).

    Handles Microsoft's release (``layers.*``, converted with mmdet's ``swin_converter``;
    its final ``norm`` becomes the last stage's out norm if that stage is an output), the
    mmpretrain v1 name ``norm.*`` for the same, ``attn_mask`` buffers (recomputed on the
    fly), classifier heads, another window size (tables resized: mmdet's/mmseg's bicubic way,
    see :func:`_resize_tables`, or mmpretrain's own hook) and another absolute position grid
    (also given as the (1, C, H, W) map of the Swin-Transformer-Object-Detection code).

    Checkpoints of the Mona authors' code (github.com/Leiyi-Hu/mona: whole detectors,
    segmentors, classifiers or backbones; Microsoft's names plus ``norm0..norm3``) load with
    their adapters: ``<block>.my_module_1/2.*`` become ``<block>.adapters.<point>.*`` for
    Mona, Adapter and AdaptFormer (:data:`AUTHORS_POINTS`, :data:`AUTHORS_PARAMS`), and their
    LoRA's 2-D ``lora_A``/``lora_B`` are stacked per part. Renamed after the Microsoft
    conversion, so ``swin_converter`` never sees our adapter names. A backbone built with
    another method or width is refused, naming the settings that load them.

    With ``backbone.pretrained_out_norm`` False (``PEFTSwinTransformer(...,
    pretrained_out_norm=False)``, the authors' runs) the checkpoint's final ``norm.*`` is not
    loaded: every out norm keeps its fresh init (weight 1, bias 0). ``norm<i>.*`` keys (this
    layout's own out norms) load either way.

    Args:
        sd: Backbone keys of the checkpoint.
        backbone: The model it goes into.
    """
    layout = 'this layout'
    last = len(backbone.stages) - 1
    v2 = [k for k in sd if k.endswith(('.logit_scale', '.cpb_mlp.0.weight'))]
    if v2:
        raise ValueError(f'a Swin V2 checkpoint (e.g. {v2[0]}) cannot load into this Swin V1: '
                         "build the backbone with type='mona_mm.PEFTSwinTransformerV2' (the "
                         "V2 config's arguments unchanged)")
    if any(k.startswith('layers.') and '.blocks.' in k for k in sd):
        sd = _from_microsoft(sd)
        layout = "Microsoft's Swin layout"
    final_norm = getattr(backbone, 'pretrained_out_norm', True)
    own_pos = getattr(backbone, 'absolute_pos_embed', None)
    out = OrderedDict()
    dropped = []
    for k, v in sd.items():
        if k.endswith('attn_mask') or k.startswith('head.'):
            continue
        if k.startswith('norm.'):
            if not final_norm:
                dropped.append(k)
                continue
            if last in backbone.out_indices:
                k = f'norm{last}.' + k[len('norm.'):]
        if k == 'absolute_pos_embed' and v.dim() == 4 and own_pos is not None and \
                own_pos.dim() == 3:
            v = v.flatten(2).transpose(1, 2).contiguous()  # (1, C, H, W) -> (1, H*W, C)
        out[k] = v
    method = _authors_method(out)
    if method is not None:
        out = _rename_authors_adapters(out, backbone, method)
        layout += f" with the {method} adapters of the Mona authors' code (my_module_*)"
    if _reshape_authors_lora(out, backbone):
        layout += " with the LoRA of the Mona authors' code"
    if dropped:
        layout += ', final `norm` not loaded (pretrained_out_norm=False)'
    if hasattr(backbone, '_prepare_relative_position_bias_table'):
        _upstream_resize(out, backbone)
    else:
        _resize_tables(out, backbone)
        _resize_abs_pos_embed(out, backbone)
    return out, layout


SWIN = register_spec(
    BackboneSpec(
        name='Swin',
        blocks=(r'stages\.\d+\.blocks\.\d+', ),
        points=dict(
            attn_out=AdapterPoint('output', 'attn'),
            post_attn=AdapterPoint('residual', 'norm2', consumer='ffn'),
            mlp_parallel=AdapterPoint('parallel', 'ffn'),
            mlp_out=AdapterPoint('output', 'ffn.gamma2'),
            post_mlp=AdapterPoint('output', ''),
        ),
        width='norm1',
        layout='tokens',
        grid='block_arg',
        qkv='attn.w_msa.qkv',
        recompute=dict(attn='attn', ffn='ffn'),
        convert=convert_swin,
        extra_tokens='none (tokens are the window grid)',
    ),
    'mmdet.models.backbones.swin.SwinTransformer',
    'mmseg.models.backbones.swin.SwinTransformer',
    'mmpretrain.models.backbones.swin_transformer.SwinTransformer',
)
