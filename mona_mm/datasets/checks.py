"""Checks on a config's datasets that run before the runner is built, so an unusable
annotation file or image is reported by name instead of failing deep inside the dataset,
the sampler or OpenCV.

What is checked cheaply, without building a dataset:

- an annotation file that is empty, is not valid JSON, or has no images (COCO JSON,
  mmengine's ``data_list`` JSON, image-id lists);
- a COCO file without its ``categories``, with no category among the config's
  ``metainfo.classes``, or, where training drops images without boxes
  (``filter_cfg.filter_empty_gt``), with no annotation left to train on;
- images that are empty (0 bytes), unreadable, or so thin that the pipeline's keep-ratio
  resize makes a side of 0 pixels (OpenCV's resize then fails with an assertion). The
  images are those a COCO file lists, else those in the dataset's image folder: up to
  :data:`MAX_LISTED` are checked for 0 bytes, :data:`MAX_IMAGES` of them (evenly spaced)
  have their header read, and every size a COCO file records is checked.
"""
import json
import os
import os.path as osp
from typing import Iterator, List, Optional, Sequence, Tuple

#: Annotation files larger than this are not read by the check (a file that large is not
#: an empty one, and reading it twice would cost time).
MAX_CHECK_BYTES = 64 * 2**20
#: At most this many image files are opened (their header only) per dataset.
MAX_IMAGES = 500
#: At most this many image files are looked at (their size on disk) per dataset.
MAX_LISTED = 50000
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
#: Resize transforms whose ``keep_ratio`` scaling can round a thin image's side down to 0.
RESIZES = ('Resize', 'RandomResize', 'RandomChoiceResize')
COCO_KEYS = ('images', 'annotations', 'categories')


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


def _join_root(ds: dict, path: str) -> str:
    """``path`` joined to the dataset's ``data_root`` as mmengine's ``BaseDataset`` does."""
    root = ds.get('data_root')
    if isinstance(root, str) and root and not osp.isabs(path):
        return osp.join(root, path)
    return path


def _ann_path(ds: dict) -> Optional[str]:
    """The annotation file a dataset config reads, resolved as mmengine's ``BaseDataset``
    does (``data_root`` joined to a relative ``ann_file``); None if there is none."""
    ann_file = ds.get('ann_file')
    if not isinstance(ann_file, str) or not ann_file:
        return None
    return _join_root(ds, ann_file)


def _type_name(ds: dict) -> str:
    kind = ds.get('type', '')
    return kind if isinstance(kind, str) else getattr(kind, '__name__', '')


def _read_json(path: str) -> Tuple[object, Optional[str]]:
    """The content of a JSON annotation file and what makes it unreadable (None if
    nothing, or if it is not a local file the check reads)."""
    if not osp.isfile(path) or osp.getsize(path) > MAX_CHECK_BYTES:
        return None, None
    if osp.getsize(path) == 0:
        return None, 'is empty (0 bytes)'
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f), None
    except UnicodeDecodeError as e:
        return None, f'is not UTF-8 text, so not JSON ({e})'
    except ValueError as e:
        return None, f'is not valid JSON ({e})'
    except OSError:
        return None, None  # the dataset class reports unreadable files itself


def empty_annotation_problem(path: str) -> Optional[str]:
    """What makes annotation file ``path`` empty or unreadable, or None if nothing does (or
    it cannot be told cheaply: not a local file, too large, a format the check does not
    know).

    Knows JSON (empty or invalid files; COCO with an empty ``images`` list, mmengine's
    format with an empty ``data_list``) and image-id lists (``.txt``, Pascal VOC's
    ``ImageSets``).

    Args:
        path: The annotation file.
    """
    if not osp.isfile(path) or osp.getsize(path) > MAX_CHECK_BYTES:
        return None
    if path.endswith('.json'):
        content, problem = _read_json(path)
        return problem or _empty_json_problem(content)
    elif path.endswith('.txt'):
        with open(path, encoding='utf-8', errors='replace') as f:
            if not any(line.strip() for line in f):
                return 'has no images (it lists no image ids)'
    return None


def _empty_json_problem(content: object) -> Optional[str]:
    if isinstance(content, dict) and content.get('images', None) == []:
        return 'has no images (its `images` list is empty)'
    if isinstance(content, dict) and content.get('data_list', None) == []:
        return 'has no samples (its `data_list` is empty)'
    return None


def annotation_problem(ds: dict, path: str) -> Tuple[Optional[str], Optional[dict]]:
    """What makes the annotation file of dataset config ``ds`` unusable (or None), and the
    file's content if it is COCO JSON (for the image check).

    Args:
        ds: The dataset config.
        path: Its annotation file, resolved.
    """
    if not path.endswith('.json'):
        return empty_annotation_problem(path), None
    content, problem = _read_json(path)  # read once: the file may be large
    if problem:
        return problem, None
    if content == {}:  # no loader can use it (COCO: KeyError 'categories')
        return ('is an empty JSON object, `{}` (a COCO file has `images`, `annotations` and '
                '`categories`' + (')' if 'Coco' in _type_name(ds) else
                                  "; mmengine's format `metainfo` and `data_list`)")), None
    if content is not None and _is_coco(ds, content):
        return _empty_json_problem(content) or coco_problem(ds, content), content
    return _empty_json_problem(content), None


def _is_coco(ds: dict, content: object) -> bool:
    """Whether the dataset reads its JSON file as COCO (mmdet's ``CocoDataset`` and its
    subclasses by name, or a file with COCO's keys)."""
    if 'Coco' in _type_name(ds):
        return True
    return isinstance(content, dict) and 'data_list' not in content and \
        any(k in content for k in COCO_KEYS)


def coco_problem(ds: dict, content: object) -> Optional[str]:
    """What makes a COCO annotation file unusable for dataset config ``ds``, or None.

    Args:
        ds: The dataset config (``metainfo``, ``filter_cfg``, ``test_mode`` are read).
        content: The file's parsed JSON.
    """
    if not isinstance(content, dict):
        return (f'holds a JSON {type(content).__name__}, not the object a COCO file is (with '
                '`images`, `annotations` and `categories`)')
    if not any(k in content for k in COCO_KEYS):
        return (f'has none of the keys of a COCO file (`images`, `annotations`, '
                f'`categories`), only {sorted(content)[:6]}')
    if not content.get('images'):
        return 'has no images (its `images` list is empty or missing)'
    categories = content.get('categories')
    if not categories:
        return ('has no categories (its `categories` list is '
                + ('empty)' if categories == [] else 'missing)'))
    names = {c.get('name'): c.get('id') for c in categories if isinstance(c, dict)}
    metainfo = ds.get('metainfo')
    classes = metainfo.get('classes') if isinstance(metainfo, dict) else None
    cat_ids = set(names.values())
    if isinstance(classes, (list, tuple)) and classes:
        cat_ids = {names[c] for c in classes if c in names}
        if not cat_ids:
            return (f'has none of the config\'s classes {tuple(classes)} among its '
                    f'categories {sorted(n for n in names if n is not None)[:8]}')
    filter_cfg = ds.get('filter_cfg')
    drops_empty = not ds.get('test_mode', False) and isinstance(filter_cfg, dict) and \
        filter_cfg.get('filter_empty_gt', False)
    if drops_empty and not any(
            isinstance(a, dict) and a.get('category_id') in cat_ids and not a.get('iscrowd')
            for a in content.get('annotations') or ()):
        what = 'no annotations' if not content.get('annotations') else \
            'no annotation (not crowd) of the config\'s classes'
        return (f'has {what}, and filter_cfg.filter_empty_gt=True drops every image without '
                'one, so nothing is left to train on')
    return None


# ------------------------------------------------------------------ images
def _resizes(pipeline) -> Iterator[dict]:
    """The keep-ratio resize transforms of a pipeline (nested ``transforms`` included)."""
    if isinstance(pipeline, dict):
        kind = pipeline.get('type', '')
        name = kind if isinstance(kind, str) else getattr(kind, '__name__', '')
        if name.split('.')[-1] in RESIZES and pipeline.get('keep_ratio', False):
            yield pipeline
        for v in pipeline.values():
            if isinstance(v, (list, tuple, dict)):
                yield from _resizes(v)
    elif isinstance(pipeline, (list, tuple)):
        for t in pipeline:
            yield from _resizes(t)


def _scales(resize: dict) -> List[Tuple[float, float]]:
    """The target scales ``(long, short)`` a keep-ratio resize can draw, smallest edges: each
    of ``Resize``'s or ``RandomChoiceResize``'s, ``ratio_range``'s lower end applied, and for
    ``RandomResize`` between two scales the smallest edges of both."""
    raw = resize.get('scales', resize.get('scale'))
    if isinstance(raw, (int, float)) or (isinstance(raw, tuple) and len(raw) == 2 and all(
            isinstance(x, (int, float)) for x in raw)):
        raw = [raw]
    if not isinstance(raw, (list, tuple)):
        return []
    ratio = resize.get('ratio_range')
    low = min(ratio) if isinstance(ratio, (list, tuple)) and ratio else 1.0
    pairs = []
    for s in raw:
        s = (s, s) if isinstance(s, (int, float)) else s
        if isinstance(s, (list, tuple)) and len(s) == 2 and \
                all(isinstance(x, (int, float)) and x > 0 for x in s):
            pairs.append((max(s) * low, min(s) * low))
    kind = str(resize.get('type', '')).split('.')[-1]
    if kind == 'RandomResize' and ratio is None and len(pairs) > 1:
        return [(min(p[0] for p in pairs), min(p[1] for p in pairs))]
    return pairs


def _resized(w: int, h: int, long: float, short: float) -> Tuple[int, int]:
    """mmcv's ``rescale_size`` with ``keep_ratio``: the size a ``w x h`` image gets."""
    factor = min(long / max(w, h), short / min(w, h))
    return int(w * factor + 0.5), int(h * factor + 0.5)


def _describe(resize: dict) -> str:
    args = ', '.join(f'{k}={resize[k]!r}' for k in ('scale', 'scales', 'ratio_range')
                     if k in resize)
    return f"{str(resize.get('type')).split('.')[-1]}({args}, keep_ratio=True)"


def size_problem(w: int, h: int, pipeline) -> Optional[str]:
    """What makes a ``w x h`` image unusable for ``pipeline``, or None.

    Args:
        w: Width in pixels.
        h: Height in pixels.
        pipeline: The dataset's pipeline config.
    """
    if w < 1 or h < 1:
        return f'is {w}x{h} pixels (an empty image)'
    for resize in _resizes(pipeline):
        for long, short in _scales(resize):
            nw, nh = _resized(w, h, long, short)
            if nw < 1 or nh < 1:
                return (f"is {w}x{h} pixels, which the pipeline's {_describe(resize)} "
                        f'scales to {nw}x{nh}, an empty image (OpenCV\'s resize fails with '
                        'an assertion)')
    return None


def _image_dir(ds: dict) -> Optional[str]:
    """The folder of a dataset's images (``data_prefix`` as a string, or its ``img`` /
    ``img_path``), joined to ``data_root``; None if the config names none."""
    prefix = ds.get('data_prefix')
    if isinstance(prefix, dict):
        prefix = prefix.get('img', prefix.get('img_path'))
    return _join_root(ds, prefix) if isinstance(prefix, str) else None


def _listed_images(folder: str) -> List[str]:
    """Image files under ``folder`` (sorted, at most :data:`MAX_LISTED`)."""
    found: List[str] = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(osp.join(root, name))
                if len(found) >= MAX_LISTED:
                    return found
    return found


def _evenly(items: list, n: int) -> list:
    if len(items) <= n:
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def _is_empty_file(path: str) -> bool:
    try:
        return osp.getsize(path) == 0
    except OSError:
        return False  # missing: the loader names it itself


def _header_problem(path: str, pipeline) -> Optional[str]:
    """What the header of image file ``path`` shows wrong (unreadable, degenerate size)."""
    from PIL import Image
    if not osp.isfile(path):
        return None  # missing: the loader names it itself
    try:
        with Image.open(path) as img:  # reads the header only
            w, h = img.size
    except Image.DecompressionBombError:
        return None  # too large for PIL's guard: OpenCV may still read it
    except Exception as e:  # PIL raises several kinds for a broken header
        if not path.lower().endswith(IMAGE_EXTENSIONS):
            return None  # a format PIL may not know (OpenCV decodes more)
        return f'cannot be read as an image ({type(e).__name__}: {e})'
    return size_problem(w, h, pipeline)


def image_problems(ds: dict, content: object = None) -> List[str]:
    """Problems of the images dataset config ``ds`` reads, as ``'image PATH PROBLEM'``.

    Args:
        ds: The dataset config.
        content: Its COCO annotation file's parsed JSON, if it has one.
    """
    pipeline = ds.get('pipeline') or []
    problems: List[str] = []
    folder = _image_dir(ds)
    if isinstance(content, dict) and isinstance(content.get('images'), list):
        prefix = ds.get('data_prefix')
        img_dir = _join_root(ds, prefix.get('img', '')) if isinstance(prefix, dict) else None
        records = [r for r in content['images'] if isinstance(r, dict)]
        for r in records:  # the sizes the file records: all of them, no file read
            w, h = r.get('width'), r.get('height')
            if isinstance(w, int) and isinstance(h, int):
                problem = size_problem(w, h, pipeline)
                if problem:
                    problems.append(f"image {r.get('file_name', r.get('id'))} (its size in "
                                    f'the annotation file) {problem}')
        if img_dir is None or '://' in img_dir:
            return problems
        paths = [osp.join(img_dir, r['file_name']) for r in records
                 if isinstance(r.get('file_name'), str)]
    elif folder and '://' not in folder and osp.isdir(folder):
        paths = _listed_images(folder)
    else:
        return problems
    paths = _evenly(paths, MAX_LISTED)
    empty = [p for p in paths if _is_empty_file(p)]
    problems += [f'image {p} is empty (0 bytes)' for p in empty]
    skip = set(empty)
    for path in _evenly([p for p in paths if p not in skip], MAX_IMAGES):
        problem = _header_problem(path, pipeline)
        if problem:
            problems.append(f'image {path} {problem}')
    return problems


def check_dataset_annotations(cfg: dict, dataloaders: Sequence[str]) -> None:
    """Raise a ValueError naming the file if a dataset of the given dataloaders would read
    an unusable annotation file or image (which mmengine, mmdet or OpenCV turn into an
    obscure error while building the dataset or a batch, e.g. "need at least one array to
    concatenate", ``KeyError: 'categories'`` or an OpenCV assertion).

    Args:
        cfg: The whole config (after ``--cfg-options``).
        dataloaders: Which dataloaders to check, e.g. ``('train_dataloader',
            'val_dataloader')``; missing or None ones are skipped.
    """
    problems: List[str] = []
    images: List[str] = []
    for name in dataloaders:
        loader = cfg.get(name)
        if not isinstance(loader, dict):
            continue
        for where, ds in _dataset_cfgs(loader.get('dataset'), f'{name}.dataset'):
            if isinstance(ds.get('dataset'), dict) or isinstance(ds.get('datasets'), list):
                continue  # a wrapper: its inner datasets are checked
            path = _ann_path(ds)
            problem, content = annotation_problem(ds, path) if path else (None, None)
            if problem:
                problems.append(f'{where}.ann_file {path} {problem}')
                continue
            bad = image_problems(ds, content)
            if bad:
                shown = '; '.join(bad[:3]) + (f'; and {len(bad) - 3} more' if len(bad) > 3
                                              else '')
                images.append(f'{where}: {shown}')
    if problems:
        raise ValueError(f'{"; ".join(problems)}: point ann_file (and data_root) at a usable '
                         'annotation file, e.g. with --cfg-options '
                         f'{problems[0].split(" ")[0]}=<file>.')
    if images:
        raise ValueError(f'{"; ".join(images)}. Remove these images from the dataset (or '
                         'its annotation file) or replace them.')
