"""MiMi (Marouf et al., WACV 2024) as an mmengine hook: iterative global pruning of adapter
neurons, with the tensors really shrinking. Two schedules: ours (``'iterative'``) and the
authors' (``'authors'``); see ``docs/mimi.md``."""
import math
import os.path as osp
from typing import Dict, Optional

import torch
import torch.distributed as dist
from mmengine.dist import all_gather_object, broadcast_object_list, get_rank, is_distributed
from mmengine.hooks import Hook
from torch import Tensor

from mona_mm.models.peft.base import iter_adapters
from mona_mm.pruning import (SCORE_NORMS, SCORES, STRUCTURE_META_KEY, adapter_param_total,
                             apply_structure, cumulative_fraction, get_structure, neuron_scores,
                             normalize_scores, prune_adapters, select_keep,
                             select_keep_cumulative, unwrap)
from mona_mm.registry import HOOKS

META_KEY = STRUCTURE_META_KEY
SCHEDULES = ('iterative', 'authors')
#: Pruning steps of the ``'iterative'`` schedule when ``max_steps`` is not given.
DEFAULT_MAX_STEPS = 20


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def built_optimizer(runner) -> Optional[torch.optim.Optimizer]:
    """The runner's optimizer if it is built already (``Runner.train`` builds it before it
    loads or resumes a checkpoint), else None (e.g. ``tools/test.py``; several optimizers:
    an ``OptimWrapperDict``).

    Args:
        runner: The runner.
    """
    from mmengine.optim import OptimWrapper, OptimWrapperDict
    wrapper = getattr(runner, 'optim_wrapper', None)
    if isinstance(wrapper, OptimWrapper) and not isinstance(wrapper, OptimWrapperDict):
        return wrapper.optimizer
    return None


def rewrap_model(runner) -> None:
    """Wrap the runner's model again after its parameters were replaced: DDP registered
    the old ones (a no-op without a distributed wrapper).

    Args:
        runner: The runner.
    """
    if is_distributed() and hasattr(runner.model, 'module'):
        runner.model = runner.wrap_model(runner.cfg.get('model_wrapper_cfg'),
                                         runner.model.module)
        if dist.is_initialized():
            dist.barrier()


@HOOKS.register_module()
class MiMiPruningHook(Hook):
    """Every ``interval`` epochs (or iterations), score the hidden neurons of every adapter
    and remove the least important ones (globally by default), until the target is met;
    then stop pruning and keep training.

    Two schedules (``docs/mimi.md`` compares them):

    * ``'iterative'`` (default, ours): each step removes a fraction ``rho`` of the neurons
      that remain, one neuron at a time in score order, and stops *within* the step as soon
      as the parameter target is met, so the target is hit closely.
    * ``'authors'``: the MiMi authors' code. Prune ``k`` (0-based) cuts to the cumulative
      fraction ``p_k = p_{k-1} + (1 - p_{k-1}) * rho`` (``p_0 = rho``) of the *original*
      neuron count: with global selection every neuron scoring at least the
      ``floor(N0 * (1 - p_k))``-th best score stays (ties included). A prune is never cut
      short; the target (if any) is checked after it, ``max_steps`` counts the prunes
      (their ``--range``). Each phase of ``interval`` epochs trains fully before its prune.

    The structure (width per adapter, vanished ones at 0) and the pruning progress travel in
    every checkpoint (``meta['mona_mm_structure']``) and are replayed before weights load, so
    ``--resume``, ``tools/test.py`` and ``load_from`` rebuild the pruned shapes.

    Args:
        interval: Prune every ``interval`` epochs (``by_epoch``) or iterations.
        by_epoch: Count ``interval`` in epochs. Defaults to True.
        rho: Fraction of remaining neurons removed per step. Defaults to 0.5 (the paper).
        target_ratio: Stop once initial / current adapter parameters >= this (finite, > 1).
        target_params: Stop once adapter parameters <= this.
        score: ``'mimi'`` (default), ``'mimi_unnormalized'``, ``'grad_l1'``, ``'random'``.
        selection: ``'global'`` (default) or ``'local'``.
        min_neurons: Neurons every adapter keeps; 0 lets adapters vanish. Defaults to 0.
            ``'iterative'`` only; it must be below the width of the widest adapter.
        max_steps: Most pruning steps. ``'iterative'``: a safety cap, 20 if None.
            ``'authors'``: the number of prunes (their ``--range``); needed unless a target
            is given. Defaults to None.
        seed: Seed of the ``random`` score, an int >= 0. Defaults to 0.
        plot: Write the kept/removed plot to the work dir after the run. Defaults to True.
        schedule: ``'iterative'`` (default) or ``'authors'``, see above.
        score_norm: ``'none'`` (default) or ``'adapter_max'``: divide each adapter's scores
            by its largest before the global ranking (the authors' ``--weighted 1``).
        restart_lr: After every prune, restart the parameter schedulers (lr, momentum) from
            their beginning, as the authors rebuild their scheduler for every phase; write
            ``param_scheduler`` for one phase then. Defaults to False (one schedule over
            the whole run).
    """

    priority = 'LOW'  # after the optimizer step of the iteration, before checkpoint saving

    def __init__(self, interval: int = 1, by_epoch: bool = True, rho: float = 0.5,
                 target_ratio: Optional[float] = None, target_params: Optional[int] = None,
                 score: str = 'mimi', selection: str = 'global', min_neurons: int = 0,
                 max_steps: Optional[int] = None, seed: int = 0, plot: bool = True,
                 schedule: str = 'iterative', score_norm: str = 'none',
                 restart_lr: bool = False) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"MiMiPruningHook: schedule must be 'iterative' (ours: remove rho "
                             "of the remaining neurons per step, stop once the target is met) "
                             "or 'authors' (prune to cumulative fractions of the original "
                             f'neurons), got {schedule!r}')
        if target_ratio is None and target_params is None and \
                (schedule == 'iterative' or max_steps is None):
            raise ValueError(
                'MiMiPruningHook needs a target: target_ratio (e.g. 4.0) or target_params'
                + (", or max_steps (the number of prunes) with schedule='authors'"
                   if schedule == 'authors' else ''))
        if target_ratio is not None and not (
                isinstance(target_ratio, (int, float)) and not isinstance(target_ratio, bool)
                and math.isfinite(target_ratio) and target_ratio > 1):
            raise ValueError(f'MiMiPruningHook: target_ratio must be a finite number > 1 '
                             f'(initial / final adapter parameters, e.g. 4.0), got '
                             f'{target_ratio!r}')
        if target_params is not None and not (_is_int(target_params) and target_params > 0):
            raise ValueError(f'MiMiPruningHook: target_params must be an int > 0, got '
                             f'{target_params!r}')
        if score not in SCORES:
            raise ValueError(f'MiMiPruningHook: unknown score {score!r}; choose one of {SCORES}')
        if selection not in ('global', 'local'):
            raise ValueError(f"MiMiPruningHook: selection must be 'global' or 'local', got "
                             f'{selection!r}')
        if not (isinstance(rho, (int, float)) and 0 < rho < 1):
            raise ValueError(f'MiMiPruningHook: rho must be in (0, 1), got {rho!r}')
        checks = [('interval', interval, 1), ('min_neurons', min_neurons, 0)]
        if max_steps is not None:
            checks.append(('max_steps', max_steps, 1))
        for field, value, low in checks:
            if not (_is_int(value) and value >= low):
                raise ValueError(f'MiMiPruningHook: {field} must be an int >= {low}, got '
                                 f'{value!r}')
        # the seed is first used at the first prune, an epoch in: check it now
        if not (_is_int(seed) and 0 <= seed < 2**63):
            raise ValueError(f'MiMiPruningHook: seed must be an int >= 0 (seed of the '
                             f"'random' score), got {seed!r}")
        if score_norm not in SCORE_NORMS:
            raise ValueError(f'MiMiPruningHook: score_norm must be one of {SCORE_NORMS} '
                             "('adapter_max': the authors' weighted score), got "
                             f'{score_norm!r}')
        if not isinstance(restart_lr, bool):
            raise ValueError(f'MiMiPruningHook: restart_lr must be True or False, got '
                             f'{restart_lr!r}')
        if schedule == 'authors' and min_neurons:
            raise ValueError(f"MiMiPruningHook: min_neurons={min_neurons} is not part of the "
                             "authors' schedule (adapters may vanish there); use "
                             "schedule='iterative' for a floor per adapter")
        self.interval, self.by_epoch, self.rho = interval, by_epoch, rho
        self.target_ratio, self.target_params = target_ratio, target_params
        self.score, self.selection, self.min_neurons = score, selection, min_neurons
        self.max_steps = max_steps if max_steps is not None or schedule == 'authors' \
            else DEFAULT_MAX_STEPS
        self.seed, self.plot = seed, plot
        self.schedule, self.score_norm, self.restart_lr = schedule, score_norm, restart_lr
        self.steps = 0
        self.done = False
        self.initial_structure: Optional[Dict[str, int]] = None
        self.initial_params: Optional[int] = None
        self._grads: Dict[str, Dict[str, Tensor]] = {}
        self._grad_handles = []
        self._resumed_grads: Optional[Dict[str, Dict[str, Tensor]]] = None

    # ------------------------------------------------------------------ bookkeeping
    def _target_met(self, params: int) -> bool:
        if self.target_params is not None and params <= self.target_params:
            return True
        if self.target_ratio is not None and params > 0 and \
                self.initial_params / params >= self.target_ratio:
            return True
        return params == 0

    def _out_of_steps(self) -> bool:
        return self.max_steps is not None and self.steps >= self.max_steps

    def before_train(self, runner) -> None:
        if self.initial_structure is None:  # not restored from a checkpoint
            self.initial_structure = get_structure(runner.model)
            self.initial_params = adapter_param_total(runner.model)
        if not self.initial_structure:
            raise RuntimeError('MiMiPruningHook: the model has no adapters to prune (is the '
                               'backbone a mona_mm PEFT backbone (PEFTSwinTransformer, '
                               'PEFTVisionTransformer, PEFTBackbone) with an adapter method?)')
        widest = max(self.initial_structure.values())
        if self.min_neurons and self.min_neurons >= widest:
            raise ValueError(
                f'MiMiPruningHook: min_neurons={self.min_neurons} is not below the width of '
                f'any adapter (the widest has {widest} neurons), so nothing could be pruned; '
                f'set min_neurons below {widest} (0 lets adapters vanish)')
        from mmengine.hooks import EMAHook
        if any(isinstance(h, EMAHook) for h in runner.hooks):
            raise RuntimeError('MiMiPruningHook cannot run beside EMAHook: the EMA copy keeps '
                               'the unpruned shapes. Prune without EMA, then fine-tune the '
                               'pruned model with EMA (load_from the pruned checkpoint).')
        current = adapter_param_total(runner.model)
        if self.target_params is not None and not self.done and self.target_params >= current:
            raise ValueError(f'MiMiPruningHook: target_params={self.target_params:,} is not '
                             f'below the current {current:,} adapter parameters; nothing '
                             'would be pruned')
        if self.restart_lr:
            self._check_restartable(runner)
        if self.score == 'grad_l1':
            self._watch_grads(runner)
            if self._resumed_grads:  # gradients accumulated before the interruption
                for name, grads in self._resumed_grads.items():
                    if name in self._grads:
                        self._grads[name].update(grads)
                self._resumed_grads = None

    def _watch_grads(self, runner) -> None:
        for h in self._grad_handles:
            h.remove()
        self._grad_handles, self._grads = [], {}
        for name, adapter in iter_adapters(unwrap(runner.model)):
            acc = self._grads.setdefault(name, {})
            for pname in adapter.score_param_names():
                p = dict(adapter.named_parameters())[pname]

                def hook(param, acc=acc, pname=pname):
                    g = param.grad.detach().abs()
                    acc[pname] = acc[pname] + g if pname in acc else g.clone()

                self._grad_handles.append(p.register_post_accumulate_grad_hook(hook))

    # ------------------------------------------------------------------ pruning step
    def after_train_epoch(self, runner) -> None:
        if self.by_epoch and self.every_n_epochs(runner, self.interval):
            self.prune(runner)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.by_epoch and self.every_n_train_iters(runner, self.interval):
            self.prune(runner)

    def prune(self, runner) -> bool:
        """One MiMi step (no-op once the target is met or the steps are used up).

        Returns:
            Whether it pruned.
        """
        if self.done or self._out_of_steps():
            return False
        model = unwrap(runner.model)
        adapters = dict(iter_adapters(model))
        gen = torch.Generator().manual_seed(self.seed + self.steps)
        for n, a in adapters.items():
            for pname, p in a.named_parameters():
                if not torch.isfinite(p).all():
                    raise FloatingPointError(
                        f'MiMi: adapter {n} has non-finite weights ({pname}); training '
                        'diverged? Resume from an earlier checkpoint with a lower lr.')
        scores = {n: neuron_scores(a, self.score, self._grads.get(n), gen)
                  for n, a in adapters.items()}
        for n, sc in scores.items():
            if not torch.isfinite(sc).all():
                raise FloatingPointError(
                    f'MiMi: adapter {n} has {int((~torch.isfinite(sc)).sum())} non-finite '
                    f'neuron scores ({self.score}); its gradients or weights are NaN/inf, so '
                    'no global ranking is meaningful. Resume from an earlier checkpoint.')

        scores = normalize_scores(scores, self.score_norm)

        def params_at(widths):
            return sum(adapters[n].param_count(w) for n, w in widths.items())

        fraction = None
        if self.schedule == 'authors':
            fraction = cumulative_fraction(self.rho, self.steps)
            keep = select_keep_cumulative(scores, fraction, self.initial_structure,
                                          self.selection)
        else:
            keep = select_keep(scores, self.rho, self.selection, self.min_neurons,
                               stop=lambda w: self._target_met(params_at(w))
                               or sum(w.values()) == 0)
        if is_distributed():  # identical on every rank, whatever the scores' float noise
            obj = [keep]
            broadcast_object_list(obj, src=0)
            keep = obj[0]
        optimizer = runner.optim_wrapper.optimizer
        prune_adapters(model, keep, optimizer)
        self._after_structure_change(runner)
        self.steps += 1
        self._check_ranks_agree(runner)
        params = adapter_param_total(model)
        structure = get_structure(model)
        neurons = sum(structure.values())
        self.done = self._target_met(params) or neurons == 0
        why = 'target met' if self._target_met(params) else 'no neuron left' if self.done \
            else ''
        if not self.done and self.schedule == 'authors' and self._out_of_steps():
            self.done, why = True, f'{self.max_steps} prunes done'
        kept = ' '.join(f'{w}' for w in structure.values())
        vanished = sum(1 for w in structure.values() if w == 0)
        phase = '' if fraction is None else \
            f' (authors: {fraction:.4f} of the original {sum(self.initial_structure.values())}' \
            f' neurons pruned, {neurons} kept)'
        runner.logger.info(
            f'MiMi step {self.steps}{phase}: adapter params {self.initial_params:,} -> '
            f'{params:,} ({self.initial_params / max(params, 1):.2f}x), {vanished} adapters '
            f'vanished{f", {why}: pruning stops" if self.done else ""}; neurons kept per '
            f'adapter: {kept}')
        runner.message_hub.update_scalar('train/mimi_adapter_params', params)
        if self.restart_lr:
            self._restart_schedulers(runner)
        return True

    # ------------------------------------------------------------------ lr restarts
    @staticmethod
    def _scheduler_lists(runner) -> list:
        scheds = getattr(runner, 'param_schedulers', None)
        if not scheds:
            return []
        return list(scheds.values()) if isinstance(scheds, dict) else [scheds]

    def _check_restartable(self, runner) -> None:
        lists = self._scheduler_lists(runner)
        if not any(lists):
            raise ValueError('MiMiPruningHook: restart_lr=True, but the runner has no '
                             'param_scheduler to restart')
        from mmengine.optim.scheduler import ReduceOnPlateauParamScheduler
        for sched in (s for lst in lists for s in lst):
            if isinstance(sched, ReduceOnPlateauParamScheduler):
                raise ValueError(f'MiMiPruningHook: restart_lr=True cannot restart '
                                 f'{type(sched).__name__} (its state follows the validation '
                                 'metric); use step-driven schedulers or restart_lr=False')

    def _restart_schedulers(self, runner) -> None:
        """Put every parameter scheduler back where it was when it was built: the scheduled
        values return to their initial ones (``initial_lr``...), then each scheduler, in
        order, takes the step it took at construction. The next phase then runs the same
        schedule as the first (their rebuilt scheduler per phase)."""
        for lst in self._scheduler_lists(runner):
            for sched in lst:
                for group in sched.optimizer.param_groups:
                    group[sched.param_name] = group[f'initial_{sched.param_name}']
            for sched in lst:
                sched.last_step = -1
                sched._global_step = -1
                sched.step()
        runner.logger.info('MiMi: parameter schedules restarted for the next phase')

    def _check_ranks_agree(self, runner) -> None:
        """Under DDP every rank must end a prune with the same shapes."""
        if not is_distributed():
            return
        mine = {n: tuple(p.shape) for n, p in unwrap(runner.model).named_parameters()}
        everyone = all_gather_object(mine)
        if any(o != mine for o in everyone):
            raise RuntimeError('MiMi: ranks disagree on the pruned shapes')
        runner.logger.info(f'MiMi: pruned shapes identical on all {len(everyone)} ranks')

    def _after_structure_change(self, runner) -> None:
        if self.score == 'grad_l1':
            self._watch_grads(runner)
        rewrap_model(runner)

    # ------------------------------------------------------------------ checkpoints
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        record = dict(
            structure=get_structure(runner.model), initial_structure=self.initial_structure,
            initial_params=self.initial_params, steps=self.steps, done=self.done,
            schedule=self.schedule)
        if self.score == 'grad_l1':  # what the next prune ranks by, so resume prunes alike
            record['grads'] = {n: {k: v.detach().cpu().clone() for k, v in g.items()}
                               for n, g in self._grads.items()}
        checkpoint.setdefault('meta', {})[META_KEY] = record

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        from mona_mm.models.backbones.injection import check_checkpoint_records
        # another method: say so before the structure is applied
        check_checkpoint_records(runner.model, checkpoint, getattr(runner, '_resume', False))
        record = checkpoint.get('meta', {}).get(META_KEY)
        if not record:
            return
        # resume: restore progress; load_from (fine-tune a pruned model): shapes only. Both:
        # the optimizer, built already in a training run, follows the new parameters
        optimizer = built_optimizer(runner)
        if getattr(runner, '_resume', False):
            theirs = record.get('schedule', 'iterative')
            if theirs != self.schedule:
                raise ValueError(
                    f"MiMiPruningHook: cannot resume a schedule={theirs!r} run with "
                    f"schedule={self.schedule!r} (its {record['steps']} prunes count "
                    f"differently); set schedule={theirs!r}")
            self.steps, self.done = record['steps'], record['done']
            self.initial_structure = record['initial_structure']
            self.initial_params = record['initial_params']
            self._resumed_grads = record.get('grads')
        apply_structure(runner.model, record['structure'], optimizer)
        self._after_structure_change(runner)
        runner.logger.info(f'MiMi: rebuilt the pruned adapter structure from the checkpoint '
                           f'({adapter_param_total(runner.model):,} adapter params, '
                           f'{record.get("steps", 0)} pruning steps done)')

    def after_train(self, runner) -> None:
        if self.initial_params:
            params = adapter_param_total(runner.model)
            runner.logger.info(
                f'MiMi summary: adapter parameters {self.initial_params:,} -> {params:,} '
                f'({self.initial_params / max(params, 1):.2f}x fewer) after {self.steps} '
                'pruning steps')

    def after_run(self, runner) -> None:
        if self.plot and get_rank() == 0 and self.initial_structure:
            from mona_mm.pruning.plot import plot_structure
            out = osp.join(runner.work_dir, 'mimi_neurons.png')
            plot_structure(get_structure(runner.model), self.initial_structure, out)
            runner.logger.info(f'MiMi: kept/removed neurons per adapter plotted to {out}')
