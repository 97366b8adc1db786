"""Checks on a config's datasets that run before the runner is built, so an unusable
annotation file is reported by name instead of failing deep inside the dataset or sampler."""
import json
import os.path as osp
from typing import Iterator, List, Optional, Sequence, Tuple

#: Annotation files larger than this are not read by the check (a file that large is not
#: an empty one, and reading it twice would cost time).
MAX_CHECK_BYTES = 64 * 2**20


def _dataset_cfgs(cfg: dict, where: str) -> Iterator[Tuple[str, dict]]:
    """Every dataset config inside ``cfg`` (wrappers such as ``RepeatDataset`` and
    ``ConcatDataset`` included), with its path in the config."""
    if not isinstance(cfg, dict):
        return
    yield where, cfg
    inner = cfg.get('dataset')
    if isinstance(inner, dict):
        yield from _dataset_cfgs(inner, f'{where}.dataset')
    datasets = cfg.get('datasets')
    if isinstance(datasets, (list, tuple)):
        for i, d in enumerate(datasets):
            yield from _dataset_cfgs(d, f'{where}.datasets.{i}')


def _ann_path(ds: dict) -> Optional[str]:
    """The annotation file a dataset config reads, resolved as mmengine's ``BaseDataset``
    does (``data_root`` joined to a relative ``ann_file``); None if there is none."""
    ann_file = ds.get('ann_file')
    if not isinstance(ann_file, str) or not ann_file:
        return None
    root = ds.get('data_root')
    if isinstance(root, str) and root and not osp.isabs(ann_file):
        return osp.join(root, ann_file)
    return ann_file


def empty_annotation_problem(path: str) -> Optional[str]:
    """What makes annotation file ``path`` empty, or None if it is not (or cannot be told
    cheaply: not a local file, too large, not JSON/text the check knows).

    Knows COCO JSON (an empty ``images`` list), mmengine's JSON format (an empty
    ``data_list``) and image-id lists (``.txt``, Pascal VOC's ``ImageSets``).

    Args:
        path: The annotation file.
    """
    if not osp.isfile(path) or osp.getsize(path) > MAX_CHECK_BYTES:
        return None
    if path.endswith('.json'):
        try:
            with open(path, encoding='utf-8') as f:
                content = json.load(f)
        except (OSError, ValueError):
            return None  # the dataset class reports unreadable files itself
        if isinstance(content, dict) and content.get('images', None) == []:
            return 'has no images (its `images` list is empty)'
        if isinstance(content, dict) and content.get('data_list', None) == []:
            return 'has no samples (its `data_list` is empty)'
    elif path.endswith('.txt'):
        with open(path, encoding='utf-8', errors='replace') as f:
            if not any(line.strip() for line in f):
                return 'has no images (it lists no image ids)'
    return None


def check_dataset_annotations(cfg: dict, dataloaders: Sequence[str]) -> None:
    """Raise a ValueError naming the annotation file if a dataset of the given dataloaders
    would read an empty one (which mmengine turns into an obscure error while building the
    dataset, e.g. "need at least one array to concatenate").

    Args:
        cfg: The whole config (after ``--cfg-options``).
        dataloaders: Which dataloaders to check, e.g. ``('train_dataloader',
            'val_dataloader')``; missing or None ones are skipped.
    """
    problems: List[str] = []
    for name in dataloaders:
        loader = cfg.get(name)
        if not isinstance(loader, dict):
            continue
        for where, ds in _dataset_cfgs(loader.get('dataset'), f'{name}.dataset'):
            path = _ann_path(ds)
            problem = empty_annotation_problem(path) if path else None
            if problem:
                problems.append(f'{where}.ann_file {path} {problem}')
    if problems:
        raise ValueError(f'{"; ".join(problems)}: point ann_file (and data_root) at an '
                         'annotation file with images, e.g. with --cfg-options '
                         f'{problems[0].split(" ")[0]}=<file>.')
