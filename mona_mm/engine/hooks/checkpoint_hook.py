"""Crash-safe checkpoint saving: no checkpoint is lost when a run is killed while saving."""
import os
import os.path as osp
import re
from typing import Optional

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.runner import Runner

from mona_mm.registry import HOOKS
from mona_mm.utils.checkpoint_io import stamp_hash

# ``.<name>.tmp-<pid>``: hidden, and never matched by ``filename_tmpl`` or a ``*.pth`` glob
_TMP_RE = re.compile(r'^\..+\.tmp-\d+$')


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
    ``before_train``. A killed run may leave one superseded checkpoint on disk (killed between
    the rename and the removal); it is never one that ``last_checkpoint`` names.

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

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """On resume, refuse a checkpoint trained with another PEFT method or settings
        (its optimizer state and schedule belong to those)."""
        if getattr(runner, '_resume', False):
            from mona_mm.models.backbones.injection import check_checkpoint_records
            check_checkpoint_records(runner.model, checkpoint, strict=True)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Stamp the content hash that every mona_mm load verifies (this hook runs after the
        hooks that edit the checkpoint: VERY_LOW priority)."""
        stamp_hash(checkpoint)

    def _remove_leftover_tmp_files(self, runner) -> None:
        """Remove temp files of a run killed while saving (resume never reads them: it follows
        ``last_checkpoint``, which only ever names complete checkpoints)."""
        dirs = {osp.normpath(d) for d in (self.out_dir, runner.work_dir,
                osp.join(self.out_dir, osp.dirname(self.filename_tmpl)))}
        for d in sorted(dirs):
            if not osp.isdir(d):
                continue
            for name in sorted(os.listdir(d)):
                path = osp.join(d, name)
                if _TMP_RE.match(name) and osp.isfile(path):
                    _remove_quietly(path)
                    runner.logger.info(f'SafeCheckpointHook: removed {path}, left by a run '
                                       'killed while saving')

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
