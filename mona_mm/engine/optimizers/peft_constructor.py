"""An optimizer wrapper constructor that knows which parameters a PEFT method trains.

mmengine's ``DefaultOptimWrapperConstructor`` applies ``paramwise_cfg`` rules by name. Upstream
configs written for full fine-tuning scale the whole backbone (Mask2Former:
``custom_keys={'backbone': dict(lr_mult=0.1)}``), which would silently train the adapters at a
tenth of their learning rate; with a frozen backbone it also logs one warning per frozen tensor
and one line per rule applied (hundreds of lines). This constructor keeps every upstream rule
and changes three things:

- only trainable parameters enter the optimizer, in one group per distinct setting (not one
  per tensor), in model order;
- the parameters a PEFT method trains inside a ``mona_mm`` backbone (adapters, LoRA factors,
  BitFit biases...; not ``peft=Full``, which is the upstream backbone) ignore custom keys that
  scale the whole backbone (a key contained in the backbone's own name, e.g. ``'backbone'``)
  and take their own ``lr_mult``/``decay_mult``;
- one table (groups, tensors, parameters, lr, weight decay) and one trainable-parameter
  summary are logged instead of the per-tensor lines.
"""
import logging
import math
import numbers
from collections import OrderedDict
from contextlib import contextmanager
from typing import Dict, Iterator, List, Mapping, Optional, Tuple, Union

import torch.nn as nn
from mmengine.logging import MMLogger, print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper

from mona_mm.registry import OPTIM_WRAPPER_CONSTRUCTORS

#: ``paramwise_cfg`` keys mmengine's constructor reads (any other key would be ignored there).
UPSTREAM_KEYS = ('custom_keys', 'bias_lr_mult', 'bias_decay_mult', 'norm_decay_mult',
                 'dwconv_decay_mult', 'flat_decay_mult', 'bypass_duplicate', 'dcn_offset_lr_mult')
#: ``paramwise_cfg.peft`` keys and their defaults.
PEFT_DEFAULTS = dict(lr_mult=1.0, decay_mult=1.0, backbone_keys=False)


class _DropPerTensorLogs(logging.Filter):
    """Drops the upstream constructor's per-tensor lines; the summary table replaces them."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith('paramwise_options -- ')
                    or msg.endswith('is skipped since its requires_grad=False'))


@contextmanager
def _quiet_per_tensor_logs() -> Iterator[None]:
    logger = MMLogger.get_current_instance()
    drop = _DropPerTensorLogs()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _check_mult(where: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not math.isfinite(value) or value < 0:
        raise ValueError(f'{where} must be a finite number >= 0, got {value!r}')
    return float(value)


def _hashable(value):
    return repr(value) if isinstance(value, (list, dict, set)) else value


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class PEFTOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor with parameter groups built for PEFT.

    Every ``paramwise_cfg`` option of ``DefaultOptimWrapperConstructor`` keeps its meaning
    (``custom_keys``, ``norm_decay_mult``, ``bias_decay_mult``...), plus one more::

        optim_wrapper = dict(
            constructor='mona_mm.PEFTOptimWrapperConstructor',
            optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
            paramwise_cfg=dict(
                custom_keys={'backbone': dict(lr_mult=0.1)},   # upstream, for full tuning
                peft=dict(lr_mult=1.0, decay_mult=1.0, backbone_keys=False)))

    ``peft`` sets the rules of the parameters a PEFT method trains inside a ``mona_mm``
    backbone (with ``peft=Full`` the backbone is the upstream one and keeps upstream rules):

    - ``backbone_keys`` (bool, default False): whether custom keys contained in the
      backbone's own name (``'backbone'``, ``'backbone.'``: they scale every backbone
      parameter) apply to these parameters too. Other custom keys (``'norm'``,
      ``'.adapters.'``, ``'backbone.stages.3'``...) and the bias/norm/dwconv rules apply as
      upstream.
    - ``lr_mult`` / ``decay_mult`` (default 1.0): multiply their lr / weight decay after the
      rules above.

    Frozen parameters stay out of the optimizer. Parameters with identical settings share a
    group (the optimizer's arithmetic per parameter is unchanged), so the groups are few and
    the step runs on whole groups.

    Args:
        optim_wrapper_cfg: The ``optim_wrapper`` config without ``constructor`` and
            ``paramwise_cfg``.
        paramwise_cfg: As mmengine's, plus ``peft``. Unknown keys are refused (mmengine would
            ignore a misspelt one).
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        paramwise_cfg = dict(paramwise_cfg or {})
        if not isinstance(paramwise_cfg, dict):
            raise TypeError(f'paramwise_cfg should be None or a dict, got {paramwise_cfg!r}')
        unknown = sorted(set(paramwise_cfg) - set(UPSTREAM_KEYS) - {'peft'})
        if unknown:
            raise ValueError(f'paramwise_cfg has unknown keys {unknown}; the known ones are '
                             f'{list(UPSTREAM_KEYS) + ["peft"]}')
        peft = paramwise_cfg.pop('peft', None) or {}
        if not isinstance(peft, dict):
            raise TypeError(f'paramwise_cfg.peft must be a dict, got {peft!r}')
        unknown = sorted(set(peft) - set(PEFT_DEFAULTS))
        if unknown:
            raise ValueError(f'paramwise_cfg.peft has unknown keys {unknown}; the known ones '
                             f'are {list(PEFT_DEFAULTS)}')
        self.peft_cfg = {**PEFT_DEFAULTS, **peft}
        for key in ('lr_mult', 'decay_mult'):
            self.peft_cfg[key] = _check_mult(f'paramwise_cfg.peft.{key}', self.peft_cfg[key])
        if not isinstance(self.peft_cfg['backbone_keys'], bool):
            raise TypeError('paramwise_cfg.peft.backbone_keys must be True or False, got '
                            f'{self.peft_cfg["backbone_keys"]!r}')
        # never empty: mmengine passes model.parameters() (frozen ones included) when it is
        paramwise_cfg.setdefault('custom_keys', {})
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        if self.base_lr is None and self.peft_cfg['lr_mult'] != 1.0:
            raise ValueError('paramwise_cfg.peft.lr_mult needs optimizer.lr')
        if self.base_wd is None and self.peft_cfg['decay_mult'] != 1.0:
            raise ValueError('paramwise_cfg.peft.decay_mult needs optimizer.weight_decay')
        self._parts: Dict[int, str] = {}  # id(param) -> part of the model, for the table
        self._ignored: set = set()  # backbone-wide custom keys skipped for PEFT parameters
        self._building = self._inside_peft = False

    def __call__(self, model: nn.Module) -> OptimWrapper:
        if is_model_wrapper(model):
            model = model.module
        # the upstream train() freezes (frozen_stages, norm_eval...): count after it (not
        # yet the start of training: no weights have loaded)
        from mona_mm.models.backbones.injection import random_check_deferred
        with random_check_deferred():
            model.train(model.training)
        optim_wrapper = super().__call__(model)
        # mmengine builds the optimizer from a ConfigDict, which makes every param group a
        # ConfigDict; torch.compile traces the optimizer step of a compiled train_step
        # (`compile=True`) only over plain dicts
        groups = optim_wrapper.optimizer.param_groups
        groups[:] = [g if type(g) is dict else dict(g) for g in groups]
        self._log_summary(model, optim_wrapper)
        return optim_wrapper

    # ------------------------------------------------------------------ groups
    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module: Optional[Union[int, float]] = None) -> None:
        """Add the trainable parameters of ``module`` to ``params``, one group per setting.

        Args:
            params: The list of param groups, modified in place.
            module: The module to add.
            prefix: Its qualified name.
            is_dcn_module: As mmengine's (DCN offsets' lr).
        """
        if self._building:  # a recursive call from mmengine's add_params
            self._add(params, module, prefix, is_dcn_module)
            return
        per_tensor: List[dict] = []
        self._building, self._parts, self._ignored = True, {}, set()
        try:
            with _quiet_per_tensor_logs():
                self._add(per_tensor, module, prefix, is_dcn_module)
        finally:
            self._building = False
        params.extend(self._merge(per_tensor))

    def _add(self, params: List[dict], module: nn.Module, prefix: str,
             is_dcn_module: Optional[Union[int, float]]) -> None:
        from mona_mm.models.backbones.injection import is_peft_backbone
        start = len(params)
        peft_here = (not self._inside_peft and is_peft_backbone(module)
                     and module.peft_cfg.get('type') != 'Full')
        if not peft_here:
            super().add_params(params, module, prefix, is_dcn_module)
        else:
            upstream = self.paramwise_cfg
            custom = upstream.get('custom_keys', {})
            if not self.peft_cfg['backbone_keys']:
                self._ignored.update(k for k in custom if k in f'{prefix}.')
                custom = {k: v for k, v in custom.items() if k not in f'{prefix}.'}
            self.paramwise_cfg = {**upstream, 'custom_keys': custom}
            self._inside_peft = True
            try:
                super().add_params(params, module, prefix, is_dcn_module)
            finally:
                self.paramwise_cfg = upstream
                self._inside_peft = False
            for group in params[start:]:
                self._apply_peft_mults(group)
        # parts: a PEFT backbone names all its parameters (its children ran first); else the
        # top-level child (neck, roi_head...) they belong to
        for group in params[start:]:
            for p in group['params']:
                if peft_here:
                    self._parts[id(p)] = f"{prefix or 'model'} ({module.peft_cfg.get('type')})"
                else:
                    self._parts.setdefault(id(p), prefix.split('.')[0] or 'model')

    def _apply_peft_mults(self, group: dict) -> None:
        if self.peft_cfg['lr_mult'] != 1.0:
            group['lr'] = group.get('lr', self.base_lr) * self.peft_cfg['lr_mult']
        if self.peft_cfg['decay_mult'] != 1.0:
            group['weight_decay'] = (group.get('weight_decay', self.base_wd)
                                     * self.peft_cfg['decay_mult'])

    def _merge(self, per_tensor: List[dict]) -> List[dict]:
        merged: 'OrderedDict[Tuple, dict]' = OrderedDict()
        for group in per_tensor:
            (param, ) = group['params']
            options = {k: v for k, v in group.items() if k != 'params'}
            key = (self._parts[id(param)], ) + tuple(
                sorted((k, _hashable(v)) for k, v in options.items()))
            merged.setdefault(key, dict(params=[], **options))['params'].append(param)
        self._parts = {id(p): key[0] for key, g in merged.items() for p in g['params']}
        return list(merged.values())

    # ----------------------------------------------------------------- logging
    def _log_summary(self, model: nn.Module, optim_wrapper: OptimWrapper) -> None:
        optimizer = optim_wrapper.optimizer
        defaults = optimizer.defaults
        rows = []
        for i, group in enumerate(optimizer.param_groups):
            ps = group['params']
            extra = {k: v for k, v in group.items()
                     if k not in ('params', 'lr', 'weight_decay', 'initial_lr')
                     and (k not in defaults or defaults[k] != v)}
            rows.append((str(i), self._parts.get(id(ps[0]), '?') if ps else '-',
                         f'{len(ps)}', f'{sum(p.numel() for p in ps):,}',
                         f"{group.get('lr', float('nan')):.4g}",
                         f"{group.get('weight_decay', 0.0):.4g}",
                         ', '.join(f'{k}={v}' for k, v in sorted(extra.items()))))
        head = ('group', 'part', 'tensors', 'params', 'lr', 'weight_decay', 'other settings')
        widths = [max(len(r[c]) for r in rows + [head]) for c in range(len(head))]
        lines = ['| ' + ' | '.join(c.ljust(w) for c, w in zip(r, widths)) + ' |'
                 for r in [head] + rows]
        lines.insert(1, '|' + '|'.join('-' * (w + 2) for w in widths) + '|')
        notes = []
        if self._ignored:
            notes.append('custom_keys not applied to the PEFT-trained parameters (they scale '
                         'the whole backbone; paramwise_cfg.peft.backbone_keys=True applies '
                         f'them): {sorted(self._ignored)}')
        custom = self.paramwise_cfg.get('custom_keys', {})
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        unused = sorted(k for k in custom if not any(k in n for n in trainable))
        if unused:
            shown = ', '.join(repr(k) for k in unused[:4])
            notes.append(f'{len(unused)} custom_keys match no trainable parameter (frozen or '
                         f'absent): {shown}' + (', ...' if len(unused) > 4 else ''))
        print_log(f'{type(optimizer).__name__} parameter groups '
                  f'({type(self).__name__}, frozen parameters left out):\n'
                  + '\n'.join(lines + notes), logger='current')
        print_log(trainable_summary(model), logger='current')
        self._parts = {}


def trainable_summary(model: nn.Module) -> str:
    """One line: trainable parameters of the backbone, the rest (neck and heads) and all.

    Args:
        model: A detector/segmentor/classifier (wrapped or not), or a backbone.
    """
    from mona_mm.utils.params import count_trainable
    c = count_trainable(model)

    def pct(a: int, b: int) -> str:
        return f'{100.0 * a / b:.2f} %' if b else '-'

    return (f"trainable parameters: backbone {c['backbone_trainable']:,} / "
            f"{c['backbone_total']:,} ({pct(c['backbone_trainable'], c['backbone_total'])}), "
            f"neck+heads {c['other_trainable']:,} / {c['total'] - c['backbone_total']:,}, "
            f"total {c['trainable']:,} / {c['total']:,} ({pct(c['trainable'], c['total'])})")


def _is_peft_constructor(constructor) -> bool:
    if isinstance(constructor, type):
        return issubclass(constructor, PEFTOptimWrapperConstructor)
    return isinstance(constructor, str) and \
        constructor.split('.')[-1] == 'PEFTOptimWrapperConstructor'


def backbone_lr_mult_warning(cfg: Mapping) -> Optional[str]:
    """The warning for a config whose ``custom_keys`` scale the whole backbone (written for
    full fine-tuning, e.g. Mask2Former's ``'backbone': dict(lr_mult=0.1)``) while the backbone
    is a mona_mm PEFT backbone and the optimizer is built by mmengine's constructor: the rule
    then reaches the adapters too, silently. None when nothing is wrong.

    ``tools/train.py`` logs it once the runner exists.

    Args:
        cfg: The merged config (after ``--cfg-options``).
    """
    model = cfg.get('model')
    backbone = model.get('backbone') if isinstance(model, dict) else None
    kind = backbone.get('type') if isinstance(backbone, dict) else None
    name = kind if isinstance(kind, str) else getattr(kind, '__name__', '')
    if not (name.startswith('mona_mm.PEFT') or name.startswith('PEFT')):
        return None
    peft = backbone.get('peft')
    if isinstance(peft, dict) and peft.get('type') == 'Full':
        return None  # the upstream backbone, trained as upstream
    wrapper = cfg.get('optim_wrapper')
    if not isinstance(wrapper, dict) or _is_peft_constructor(wrapper.get('constructor')):
        return None
    custom = (wrapper.get('paramwise_cfg') or {}).get('custom_keys') or {}
    # a key contained in 'backbone.' matches every backbone parameter name (as mmengine's
    # constructor and PEFTOptimWrapperConstructor match keys: substring of the name)
    hits = [(k, v) for k, v in custom.items() if isinstance(v, dict) and k in 'backbone.'
            and any(v.get(m, 1.0) != 1.0 for m in ('lr_mult', 'decay_mult'))]
    if not hits:
        return None
    key, rule = hits[0]
    mults = ', '.join(f'{m}={rule[m]}' for m in ('lr_mult', 'decay_mult')
                      if rule.get(m, 1.0) != 1.0)
    return (f'optim_wrapper.paramwise_cfg.custom_keys[{key!r}] ({mults}) scales every backbone '
            f'parameter, the adapters of {name} included (a full fine-tuning rule: the '
            'adapters would train with the scaled learning rate / weight decay). Add '
            "optim_wrapper = dict(constructor='mona_mm.PEFTOptimWrapperConstructor') to the "
            'config: it keeps the rule for the rest of the model and trains the adapters '
            'with the base settings (paramwise_cfg.peft sets their own).')
