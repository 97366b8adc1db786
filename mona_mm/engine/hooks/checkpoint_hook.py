"""Crash-safe checkpoint saving: no checkpoint is lost when a run is killed while saving."""
import os
import os.path as osp
import re
import string
from typing import Dict, List, Optional, Tuple

from mmengine.dist import broadcast_object_list, is_distributed, is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.runner import Runner

from mona_mm.registry import HOOKS
from mona_mm.utils.checkpoint_io import remove_stale_tmp_files, stamp_hash

# ``.<name>.tmp-<pid>``: hidden, and never matched by ``filename_tmpl`` or a ``*.pth`` glob

def _tmp_name(filename: str) -> str:
    head, tail = osp.split(filename)
    return osp.join(head, f'.{tail}.tmp-{os.getpid()}')


def _fsync_file(path: str) -> None:
    with open(path, 'rb+') as f:  # writable: Windows' fsync needs it
        os.fsync(f.fileno())


def _fsync_dir(path: str) -> None:
    """Make a rename in ``path`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path or '.', os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _same_file(a: Optional[str], b: Optional[str]) -> bool:
    return bool(a) and bool(b) and osp.abspath(str(a)) == osp.abspath(str(b))


def _template_re(template: str) -> 're.Pattern':
    """A regex matching the names ``template.format(step)`` gives, the step as group 1."""
    parts = []
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field is not None:
            parts.append(r'(\d+)')
    return re.compile(''.join(parts) + '$')


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _write_text_atomic(path: str, text: str) -> None:
    """Replace ``path`` by a file holding ``text``: readers see the old or the new text, never
    a partial one.

    Args:
        path: File to write.
        text: Its new content.
    """
    tmp = osp.join(osp.dirname(path), _tmp_name(osp.basename(path)))
    try:
        with open(tmp, 'w') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(osp.dirname(path))


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """:class:`mmengine.hooks.CheckpointHook` that never loses a complete checkpoint.

    mmengine 0.10.7 removes the oldest kept checkpoint (and the previous best) *before* writing
    the new one, writes it in place and then points ``last_checkpoint`` at it: a run killed
    while saving with ``max_keep_ckpts=1`` keeps no usable checkpoint, and ``--resume`` follows
    ``last_checkpoint`` to a deleted or truncated file. Here every checkpoint is written to
    ``.<name>.tmp-<pid>`` in the same directory (through ``runner.save_checkpoint``, so every
    ``before_save_checkpoint`` hook runs once), fsync'ed and renamed into place; only then is
    ``last_checkpoint`` replaced (also by a rename) and are checkpoints beyond
    ``max_keep_ckpts`` and the previous best removed. The bookkeeping (``keep_ckpt_ids``,
    ``last_ckpt``, ``best_score``, ``best_ckpt`` in the message hub) is upstream's, so resuming
    works as with ``CheckpointHook``. Temp files left by a killed run are removed at
    ``before_train``. A run killed between a rename and a removal leaves a superseded
    checkpoint (beyond ``max_keep_ckpts``) or a second ``best_*.pth`` on disk; when the run
    is resumed, ``before_train`` removes them: checkpoints older than the resumed one that
    its ``keep_ckpt_ids`` no longer lists, and best checkpoints older than the current best.
    A best checkpoint of the resumed step itself that the resumed bookkeeping does not name
    (killed after that step's validation wrote it) becomes the current best, with the score
    it was saved with. Never removed: the resumed checkpoint, the one ``last_checkpoint``
    names, the current best, and checkpoints of later steps than the resumed one.

    On resume and with ``load_from``, the adapter widths a checkpoint records (MiMi-pruned)
    are given to the model *before* its weights load, with the optimizer following the new
    parameters; resuming a run that MiMi was pruning needs its ``MiMiPruningHook``.

    Only local directories get the atomic path; an ``out_dir`` with a URI scheme (``s3://``,
    ...) or a runner other than :class:`mmengine.runner.Runner` (``FlexibleRunner``: sharded,
    possibly directory checkpoints) saves as ``CheckpointHook`` does, with a warning.

    Args:
        interval: Saving period, in epochs if ``by_epoch`` else iterations; -1: never.
        by_epoch: Save by epoch or by iteration.
        save_optimizer: Save the optimizer state (needed to resume).
        save_param_scheduler: Save the parameter schedulers' state (needed to resume).
        out_dir: Root directory; defaults to ``runner.work_dir`` (else ``out_dir/<work_dir
            basename>``).
        max_keep_ckpts: How many periodic checkpoints to keep; -1: all.
        save_last: Save at the end of training regardless of ``interval``.
        save_best: Metric(s) whose best checkpoint is kept, or ``'auto'``.
        rule: ``'greater'`` / ``'less'`` (or a list, one per metric); inferred when None.
        greater_keys: Metric names for which greater is better (used to infer ``rule``).
        less_keys: Metric names for which less is better.
        file_client_args: Deprecated; use ``backend_args``.
        filename_tmpl: Checkpoint name with one ``{}``; defaults to ``epoch_{}.pth`` or
            ``iter_{}.pth``.
        backend_args: Arguments of the file backend of ``out_dir``.
        published_keys: Keys kept in the published copies written after training.
        save_begin: Epoch or iteration from which checkpoints are saved.
        **kwargs: Passed to ``runner.save_checkpoint``, as by ``CheckpointHook``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._atomic = False  # decided in before_train, once out_dir and the backend are known
        self._warned = False

    def before_train(self, runner) -> None:
        super().before_train(runner)
        backend = getattr(self.file_backend, 'client', self.file_backend)  # FileClient wraps
        self._atomic = (isinstance(runner, Runner) and isinstance(backend, LocalBackend)
                        and '://' not in str(self.out_dir))
        if not self._atomic:
            if not self._warned:
                runner.logger.warning(
                    f'SafeCheckpointHook: checkpoints in {self.out_dir} are saved as by '
                    "mmengine's CheckpointHook (atomic saving needs a local directory and "
                    'mmengine.runner.Runner); a run killed while saving may lose them.')
                self._warned = True
            return
        if is_main_process():
            self._remove_leftover_tmp_files(runner)
        if getattr(runner, '_resume', False) and getattr(runner, '_has_loaded', False):
            self._clean_after_resume(runner)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """On resume, refuse a checkpoint trained with another PEFT method or settings
        (its optimizer state and schedule belong to those); then give the model the pruned
        adapter widths the checkpoint records, before the weights and the optimizer state
        load (``MiMiPruningHook``, which runs first, does it for the runs it prunes)."""
        resume = getattr(runner, '_resume', False)
        if resume:
            from mona_mm.models.backbones.injection import check_checkpoint_records
            check_checkpoint_records(runner.model, checkpoint, strict=True)
        self._follow_structure(runner, checkpoint, resume)

    def _follow_structure(self, runner, checkpoint: dict, resume: bool) -> None:
        """Shrink the model's adapters to the widths the checkpoint's backbone records say,
        with the built optimizer following (mmengine builds it before loading; without this
        the backbone would shrink while its weights load, leaving the optimizer on the old
        parameters: a resume then fails in ``load_state_dict`` and a ``load_from`` run never
        updates the adapters)."""
        from mona_mm.models.backbones.injection import checkpoint_records, is_peft_backbone
        from mona_mm.pruning import STRUCTURE_META_KEY, apply_structure, unwrap
        from .mimi_pruning_hook import MiMiPruningHook, built_optimizer, rewrap_model
        records = checkpoint_records(checkpoint.get('state_dict'))
        if not records:
            return
        changes = []
        for name, module in unwrap(runner.model).named_modules():
            theirs = records.get(name, {}).get('structure') if is_peft_backbone(module) \
                else None
            mine = module.peft_record()['structure'] if theirs else None
            # anything else (other adapters, wider ones) is reported by the backbone's load
            if theirs and theirs != mine and set(theirs) == set(mine) and \
                    all(w <= mine[n] for n, w in theirs.items()):
                changes.append((name, module, theirs, mine))
        if not changes:
            return
        mimi = (checkpoint.get('meta') or {}).get(STRUCTURE_META_KEY) or {}
        if resume and 'steps' in mimi and \
                not any(isinstance(h, MiMiPruningHook) for h in runner.hooks):
            name, _, theirs, mine = changes[0]
            raise ValueError(
                f'cannot resume: this checkpoint comes from a run that MiMi pruned ('
                f'{mimi["steps"]} pruning steps, {name or "backbone"} adapters at '
                f'{sum(theirs.values())} of {sum(mine.values())} neurons), and this run has no '
                "mona_mm.MiMiPruningHook to restore that structure and the pruning's "
                'progress. Resume with the config the run was trained with (its custom_hooks '
                "include dict(type='mona_mm.MiMiPruningHook', ...)), or start a new run from "
                'its weights: load_from=<checkpoint> without --resume.')
        optimizer = built_optimizer(runner)
        for name, module, theirs, mine in changes:
            apply_structure(module, theirs, optimizer)
            runner.logger.info(
                f'SafeCheckpointHook: {name or "backbone"} adapters shrunk to the '
                f'checkpoint\'s widths ({sum(theirs.values())} of {sum(mine.values())} '
                f'neurons, {sum(1 for w in theirs.values() if w == 0)} removed adapters)'
                + ('' if optimizer is None else ', the optimizer following'))
        rewrap_model(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Stamp the content hash that every mona_mm load verifies (this hook runs after the
        hooks that edit the checkpoint: VERY_LOW priority)."""
        stamp_hash(checkpoint)

    def _remove_leftover_tmp_files(self, runner) -> None:
        """Remove temp files of a run killed while saving (resume never reads them: it follows
        ``last_checkpoint``, which only ever names complete checkpoints); a save in progress
        in another live process keeps its file."""
        dirs = {osp.normpath(d) for d in (self.out_dir, runner.work_dir,
                osp.join(self.out_dir, osp.dirname(self.filename_tmpl)))}
        for d in sorted(dirs):
            for path in remove_stale_tmp_files(d, any_name=True):
                runner.logger.info(f'SafeCheckpointHook: removed {path}, left by a run '
                                   'killed while saving')

    # ------------------------------------------------------------------ leftovers
    def _clean_after_resume(self, runner) -> None:
        """Remove what a run killed between a rename and a removal left, now that the resumed
        bookkeeping (``keep_ckpt_ids``, ``best_ckpt``) is known."""
        step = runner.epoch if self.by_epoch else runner.iter
        adopted: Dict[Optional[str], Tuple[str, float, str]] = {}
        if is_main_process():
            adopted = self._newest_bests(runner, step)
        if is_distributed():  # every rank compares scores against the same best
            box = [adopted]
            broadcast_object_list(box, src=0)
            adopted = box[0]
        for key, (score_key, score, path) in adopted.items():
            runner.message_hub.update_info(score_key, score)
            runner.message_hub.update_info(score_key.replace('best_score', 'best_ckpt', 1),
                                           path)
            if key is None:
                self.best_ckpt_path = path
            else:
                self.best_ckpt_path_dict[key] = path
        if is_main_process():
            self._remove_superseded(runner, step)

    def _protected(self, runner, bests: bool = True) -> List[str]:
        """Checkpoints never removed as leftovers: the one ``last_checkpoint`` names, the
        resumed one and (``bests``) the current best ones."""
        keep = [runner.message_hub.get_info('last_ckpt'), getattr(runner, '_load_from', None)]
        if bests:
            keep += [getattr(self, 'best_ckpt_path', None),  # set only with save_best
                     *(getattr(self, 'best_ckpt_path_dict', None) or {}).values()]
        last = osp.join(runner.work_dir, 'last_checkpoint')
        if osp.isfile(last):
            with open(last) as f:
                keep.append(f.read().strip())
        return [str(k) for k in keep if k]

    def _best_re(self, key: Optional[str]) -> 're.Pattern':
        """The names upstream gives the best checkpoints of ``key`` (any key: None), the key
        as group 1 and the step as group 2."""
        template = _template_re(self.filename_tmpl.replace('/', '_')).pattern
        name = '.+' if key is None else re.escape(key.replace('/', '_'))
        return re.compile(f'best_({name})_{template}')

    def _best_files(self, key: Optional[str], step: int) -> Dict[int, str]:
        """``{step: path}`` of the best checkpoints of ``key`` (any key: None) in ``out_dir``
        up to ``step``."""
        pattern = self._best_re(key)
        found = {}
        for entry in sorted(os.listdir(self.out_dir)) if osp.isdir(self.out_dir) else ():
            m = pattern.match(entry)
            if m and int(m.group(2)) <= step and \
                    osp.isfile(osp.join(self.out_dir, entry)):
                found[int(m.group(2))] = osp.join(self.out_dir, entry)
        return found

    def _newest_bests(self, runner,
                      step: int) -> Dict[Optional[str], Tuple[str, float, str]]:
        """Per key indicator: a best checkpoint of the resumed step that the resumed message
        hub does not name was written by the killed run after that step's validation, which
        the resumed run does not repeat: it is returned with the score it was saved with, to
        be adopted. Then the best checkpoints older than the current best (up to ``step``)
        are removed. Without a current best nothing is removed: which ``best_*`` files are
        this run's is unknown then."""
        if not self.save_best:
            return {}
        single = len(self.key_indicators) == 1
        adopted = {}
        for key in self.key_indicators:
            current = self.best_ckpt_path if single else self.best_ckpt_path_dict.get(key)
            name = None if key == 'auto' else key
            if name is None and current:  # 'auto': the metric the current best names
                m = self._best_re(None).match(osp.basename(current))
                name = m.group(1) if m else None
            files = self._best_files(name, step)
            cur_step = next((s for s, p in files.items() if _same_file(p, current)), None)
            if step in files and cur_step != step:
                score_key = 'best_score' if single else f'best_score_{key}'
                score = self._recorded_score(runner, files[step], score_key)
                if score is None:
                    continue  # cannot tell which is the best: leave them
                adopted[None if single else key] = (score_key, score, files[step])
                current, cur_step = files[step], step
                runner.logger.info(
                    f'SafeCheckpointHook: {current} ({score_key}={score}), written after the '
                    'resumed checkpoint by a run killed before it recorded it, is the best '
                    'checkpoint')
            if cur_step is None:
                continue
            protected = self._protected(runner, bests=False)  # older bests: decided here
            for s_, path in sorted(files.items()):
                if s_ < cur_step and not any(_same_file(path, p) for p in protected) and \
                        self._remove(path):
                    runner.logger.info(
                        f'SafeCheckpointHook: removed {path}, a best checkpoint older than '
                        f'the current best {current} (left by a run killed before removing '
                        'it)')
        return adopted

    @staticmethod
    def _recorded_score(runner, path: str, score_key: str) -> Optional[float]:
        """The best score a best checkpoint was saved with (its message hub's)."""
        from mona_mm.utils.checkpoint_io import load_checkpoint_file
        try:
            ckpt = load_checkpoint_file(path, map_location='cpu')
            return ckpt['message_hub']['runtime_info'][score_key]
        except Exception as e:  # unreadable or another layout: keep both, say so
            runner.logger.warning(f'SafeCheckpointHook: {path} is a best checkpoint the '
                                  'resumed run did not record and it does not say its score '
                                  f'({e}); the best checkpoints are left as they are')
            return None

    def _remove_superseded(self, runner, step: int) -> None:
        """Remove periodic checkpoints older than the resumed one that ``keep_ckpt_ids`` (the
        resumed bookkeeping) no longer lists: beyond ``max_keep_ckpts``."""
        keep = set(self.keep_ckpt_ids) if self.max_keep_ckpts > 0 else set()
        if not keep:
            return  # all kept, or nothing known about what was kept
        folder = osp.join(self.out_dir, osp.dirname(self.filename_tmpl))
        pattern = _template_re(osp.basename(self.filename_tmpl))
        protected = self._protected(runner)
        for name in sorted(os.listdir(folder)) if osp.isdir(folder) else ():
            m = pattern.match(name)
            if not m or int(m.group(1)) in keep or int(m.group(1)) >= step:
                continue
            path = osp.join(folder, name)
            if any(_same_file(path, p) for p in protected) or \
                    name != osp.basename(self.filename_tmpl.format(int(m.group(1)))):
                continue
            if self._remove(path):
                runner.logger.info(
                    f'SafeCheckpointHook: removed {path}, beyond max_keep_ckpts='
                    f'{self.max_keep_ckpts} (left by a run killed before removing it)')

    def _save_atomic(self, runner, filename: str, **kwargs) -> None:
        """``runner.save_checkpoint`` into a temp file next to ``filename``, then rename."""
        tmp_name = _tmp_name(filename)
        tmp = self.file_backend.join_path(self.out_dir, tmp_name)
        path = self.file_backend.join_path(self.out_dir, filename)
        try:
            runner.save_checkpoint(self.out_dir, tmp_name, self.file_client_args,
                                   backend_args=self.backend_args, **kwargs)
            if is_main_process():  # runner.save_checkpoint writes on the main process only
                _fsync_file(tmp)  # the data must be on disk before the name points at it
                os.replace(tmp, path)
                _fsync_dir(osp.dirname(path))
        except BaseException:
            if is_main_process():
                _remove_quietly(tmp)
            raise

    def _remove(self, path: str) -> bool:
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
            return True
        if self.file_backend.isdir(path):  # deepspeed checkpoints are directories
            self.file_backend.rmtree(path)
            return True
        return False

    def _save_checkpoint_with_step(self, runner, step: int, meta: dict) -> None:
        if not self._atomic:
            return super()._save_checkpoint_with_step(runner, step, meta)
        # upstream's bookkeeping (saved in this checkpoint's message hub), but the checkpoint
        # that falls out of keep_ckpt_ids is removed only once the new one is complete
        stale: Optional[int] = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                stale = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        self._save_atomic(runner, ckpt_filename, save_optimizer=self.save_optimizer,
                          save_param_scheduler=self.save_param_scheduler, meta=meta,
                          by_epoch=self.by_epoch, **self.args)
        if not is_main_process():
            return
        _write_text_atomic(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        if stale is not None:
            stale_path = self.file_backend.join_path(self.out_dir,
                                                     self.filename_tmpl.format(stale))
            if stale_path != self.last_ckpt:
                self._remove(stale_path)

    def _save_best_checkpoint(self, runner, metrics: dict) -> None:
        # upstream's method (mmengine 0.10.7) with the previous best removed after, not before,
        # the new best is written
        if not self._atomic:
            return super()._save_best_checkpoint(runner, metrics)
        if not self.save_best:
            return
        if self.by_epoch:
            ckpt_filename = self.filename_tmpl.format(runner.epoch)
            cur_type, cur_time = 'epoch', runner.epoch
        else:
            ckpt_filename = self.filename_tmpl.format(runner.iter)
            cur_type, cur_time = 'iter', runner.iter
        meta = dict(epoch=runner.epoch, iter=runner.iter)
        if 'auto' in self.key_indicators:
            self._init_rule(self.rules, [list(metrics.keys())[0]])

        best_ckpt_updated = False
        single = len(self.key_indicators) == 1
        for key_indicator, rule in zip(self.key_indicators, self.rules):
            key_score = metrics[key_indicator]
            if single:
                best_score_key, runtime_best_ckpt_key = 'best_score', 'best_ckpt'
                previous = self.best_ckpt_path
            else:
                best_score_key = f'best_score_{key_indicator}'
                runtime_best_ckpt_key = f'best_ckpt_{key_indicator}'
                previous = self.best_ckpt_path_dict[key_indicator]
            if best_score_key not in runner.message_hub.runtime_info:
                best_score = self.init_value_map[rule]
            else:
                best_score = runner.message_hub.get_info(best_score_key)
            if key_score is None or not self.is_better_than[key_indicator](key_score,
                                                                           best_score):
                continue

            best_ckpt_updated = True
            best_score = key_score
            runner.message_hub.update_info(best_score_key, best_score)
            # replace characters that are illegal in file names, as upstream does
            best_ckpt_name = f'best_{key_indicator}_{ckpt_filename}'.replace('/', '_')
            best_path = self.file_backend.join_path(self.out_dir, best_ckpt_name)
            if single:
                self.best_ckpt_path = best_path
            else:
                self.best_ckpt_path_dict[key_indicator] = best_path
            runner.message_hub.update_info(runtime_best_ckpt_key, best_path)
            self._save_atomic(runner, best_ckpt_name, save_optimizer=False,
                              save_param_scheduler=False, meta=meta, by_epoch=False)
            # a new best at the same epoch/iter has the same name: it replaced the old one
            if previous and previous != best_path and is_main_process() \
                    and self._remove(previous):
                runner.logger.info(f'The previous best checkpoint {previous} is removed')
            runner.logger.info(
                f'The best checkpoint with {best_score:0.4f} {key_indicator} '
                f'at {cur_time} {cur_type} is saved to {best_ckpt_name}.')

        # save the periodic checkpoint again so that its message hub names the new best (as
        # upstream does; otherwise a resumed run could not remove it)
        if best_ckpt_updated and self.last_ckpt is not None:
            self._save_checkpoint_with_step(runner, cur_time, meta)
