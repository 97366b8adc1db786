"""A deterministic synthetic "shapes" dataset written in the real on-disk formats.

Every image has a textured background and a few coloured, non-overlapping shapes. The same
scenes are written as COCO instances (boxes + polygon masks), Pascal VOC XML, ADE20K-style
image/label PNG folders, and an ImageNet-style class-folder set that mmpretrain reads; so the
demo and the tests exercise the real dataset classes and pipelines, not a mock.

Segmentation labels follow ADE20K's PNG convention: 0 = unlabelled (unused here), 1 =
background, 2..5 = circle, square, triangle, star. Read with ``reduce_zero_label=True`` (as
mmseg's ADE20K configs do), 0 becomes the ignore index 255 and every other value drops by one,
so a segmentor trains ``num_classes=5`` classes: background (0) and the four shapes (1..4),
named by :data:`SEG_CLASSES`. Detection and classification use the four shapes only
(:data:`SHAPES_CLASSES`).

:func:`generate_study_shapes` writes the transfer sets of the PEFT study: a 56-class source
classification set to pretrain on and small, shifted target sets (classification, semantic and
instance segmentation) with train/val/test splits.

Command line: ``python -m mona_mm.datasets.shapes data/shapes`` (``--study`` for the study's
sets).
"""
import argparse
import json
import math
import os
import os.path as osp
import shutil
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

SHAPES_CLASSES = ('circle', 'square', 'triangle', 'star')
SHAPES_PALETTE = [(220, 20, 60), (0, 128, 255), (255, 200, 0), (60, 180, 75)]
SEG_CLASSES = ('background', ) + SHAPES_CLASSES  # ADE-style: label value 0 is "unlabelled"


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> List[Tuple[float, float]]:
    if kind == 'circle':
        n, radii = 32, [r]
    elif kind == 'square':
        n, radii = 4, [r]
    elif kind == 'triangle':
        n, radii = 3, [r]
    elif kind == 'star':
        n, radii = 10, [r, r * 0.45]
    elif kind == 'pentagon':
        n, radii = 5, [r]
    elif kind == 'hexagon':
        n, radii = 6, [r]
    elif kind == 'diamond':  # a rhombus: long and short half-diagonals
        n, radii = 4, [r, r * 0.55]
    elif kind == 'cross':  # a plus sign, arms 0.7 r wide
        w = 0.35 * r
        local = [(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r), (-w, -r), (-w, -w),
                 (-r, -w), (-r, w), (-w, w), (-w, r)]
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in local]
    else:
        raise ValueError(f'unknown shape {kind!r}')
    pts = []
    for i in range(n):
        rad = radii[i % len(radii)]
        a = angle + 2 * math.pi * i / n
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-frequency colour noise plus faint stripes: texture a detector must ignore."""
    coarse = rng.uniform(40, 200, size=(4, 4, 3)).astype(np.float32)
    img = np.array(Image.fromarray(coarse.astype(np.uint8)).resize((size, size),
                                                                    Image.BICUBIC),
                   dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    theta = rng.uniform(0, math.pi)
    freq = rng.uniform(0.15, 0.5)
    stripes = np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * freq)
    img += 18 * stripes[..., None] + rng.normal(0, 6, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _scene(rng: np.random.Generator, size: int, max_shapes: int,
           only_class: int = -1) -> Tuple[np.ndarray, np.ndarray, List[dict]]:
    img = Image.fromarray(_background(rng, size))
    label = Image.new('L', (size, size), 1)  # 1 = background class
    draw, ldraw = ImageDraw.Draw(img), ImageDraw.Draw(label)
    objects: List[dict] = []
    boxes: List[Tuple[float, float, float, float]] = []
    n = int(rng.integers(1, max_shapes + 1))
    for _ in range(n * 10):  # rejection sampling, no overlaps so polygons are the visible mask
        if len(objects) == n:
            break
        cls = only_class if only_class >= 0 else int(rng.integers(len(SHAPES_CLASSES)))
        r = rng.uniform(0.09, 0.2) * size
        cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
        pts = _polygon(SHAPES_CLASSES[cls], cx, cy, r, rng.uniform(0, 2 * math.pi))
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        box = (min(xs), min(ys), max(xs), max(ys))
        if any(not (box[2] + 2 < b[0] or b[2] + 2 < box[0] or box[3] + 2 < b[1]
                    or b[3] + 2 < box[1]) for b in boxes):
            continue
        base = np.array(SHAPES_PALETTE[cls], dtype=np.float32)
        colour = tuple(int(c) for c in np.clip(base + rng.normal(0, 20, 3), 0, 255))
        draw.polygon(pts, fill=colour, outline=(20, 20, 20))
        ldraw.polygon(pts, fill=2 + cls)
        boxes.append(box)
        objects.append(dict(cls=cls, box=box, polygon=pts))
    return np.asarray(img), np.asarray(label), objects


def _poly_area(pts: Sequence[Tuple[float, float]]) -> float:
    return 0.5 * abs(sum(x0 * y1 - x1 * y0
                         for (x0, y0), (x1, y1) in zip(pts, list(pts[1:]) + [pts[0]])))


def _write_coco(root: str, split: str, scenes: List[Tuple[str, np.ndarray, List[dict]]]) -> None:
    images, anns = [], []
    for img_id, (name, img, objs) in enumerate(scenes, 1):
        h, w = img.shape[:2]
        images.append(dict(id=img_id, file_name=name, width=w, height=h))
        for obj in objs:
            x0, y0, x1, y1 = obj['box']
            anns.append(dict(
                id=len(anns) + 1, image_id=img_id, category_id=obj['cls'] + 1,
                bbox=[round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                area=round(_poly_area(obj['polygon']), 2), iscrowd=0,
                segmentation=[[round(v, 2) for p in obj['polygon'] for v in p]]))
    cats = [dict(id=i + 1, name=c, supercategory='shape') for i, c in enumerate(SHAPES_CLASSES)]
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
        json.dump(dict(images=images, annotations=anns, categories=cats), f)


def _voc_xml(name: str, img: np.ndarray, objs: List[dict]) -> str:
    h, w = img.shape[:2]
    parts = [f'<annotation><folder>VOC2007</folder><filename>{name}.jpg</filename>',
             f'<size><width>{w}</width><height>{h}</height><depth>3</depth></size>']
    for obj in objs:
        x0, y0, x1, y1 = obj['box']
        # VOC boxes are 1-based inclusive pixel indices
        bx = [max(1, int(math.floor(x0)) + 1), max(1, int(math.floor(y0)) + 1),
              min(w, int(math.ceil(x1)) + 1), min(h, int(math.ceil(y1)) + 1)]
        parts.append(f'<object><name>{SHAPES_CLASSES[obj["cls"]]}</name><pose>Unspecified'
                     f'</pose><truncated>0</truncated><difficult>0</difficult><bndbox>'
                     f'<xmin>{bx[0]}</xmin><ymin>{bx[1]}</ymin><xmax>{bx[2]}</xmax>'
                     f'<ymax>{bx[3]}</ymax></bndbox></object>')
    parts.append('</annotation>')
    return ''.join(parts)


def generate_shapes(out_dir: str, num_train: int = 400, num_val: int = 100,
                    num_cls_per_class: int = 150, img_size: int = 128, cls_img_size: int = 112,
                    max_shapes: int = 4, seed: int = 0) -> Dict[str, str]:
    """Write the shapes dataset in every supported format and return their roots.

    The output depends only on the arguments (same seed, same bytes of annotation).

    Args:
        out_dir: Root folder; created if needed.
        num_train: Scenes in the detection/segmentation train split.
        num_val: Scenes in the val split (VOC: ``test``).
        num_cls_per_class: Classification images per class in train (val gets a quarter).
        img_size: Side of detection/segmentation images.
        cls_img_size: Side of classification images.
        max_shapes: Maximum shapes per scene.
        seed: Random seed.

    Returns:
        ``{'coco': ..., 'voc': ..., 'ade': ..., 'cls': ...}`` folder paths.
    """
    rng = np.random.default_rng(seed)
    roots = dict(coco=osp.join(out_dir, 'coco'), voc=osp.join(out_dir, 'VOCdevkit'),
                 ade=osp.join(out_dir, 'ade'), cls=osp.join(out_dir, 'cls'))
    voc = osp.join(roots['voc'], 'VOC2007')
    for d in (osp.join(voc, 'JPEGImages'), osp.join(voc, 'Annotations'),
              osp.join(voc, 'ImageSets', 'Main')):
        os.makedirs(d, exist_ok=True)
    for split, n, voc_split, ade_split in (('train', num_train, 'trainval', 'training'),
                                           ('val', num_val, 'test', 'validation')):
        scenes, voc_ids = [], []
        for d in (osp.join(roots['coco'], split), osp.join(roots['ade'], 'images', ade_split),
                  osp.join(roots['ade'], 'annotations', ade_split)):
            os.makedirs(d, exist_ok=True)
        for i in range(n):
            img, label, objs = _scene(rng, img_size, max_shapes)
            name = f'{split}_{i:05d}'
            pil = Image.fromarray(img)
            pil.save(osp.join(roots['coco'], split, name + '.jpg'), quality=95)
            pil.save(osp.join(voc, 'JPEGImages', name + '.jpg'), quality=95)
            pil.save(osp.join(roots['ade'], 'images', ade_split, name + '.jpg'), quality=95)
            Image.fromarray(label).save(
                osp.join(roots['ade'], 'annotations', ade_split, name + '.png'))
            with open(osp.join(voc, 'Annotations', name + '.xml'), 'w') as f:
                f.write(_voc_xml(name, img, objs))
            scenes.append((name + '.jpg', img, objs))
            voc_ids.append(name)
        _write_coco(roots['coco'], split, scenes)
        with open(osp.join(voc, 'ImageSets', 'Main', voc_split + '.txt'), 'w') as f:
            f.write('\n'.join(voc_ids) + '\n')
    for split, per_class in (('train', num_cls_per_class),
                             ('val', max(1, num_cls_per_class // 4))):
        for cls, cname in enumerate(SHAPES_CLASSES):
            d = osp.join(roots['cls'], split, cname)
            os.makedirs(d, exist_ok=True)
            for i in range(per_class):
                img, _, _ = _scene(rng, cls_img_size, 2, only_class=cls)
                Image.fromarray(img).save(osp.join(d, f'{cname}_{i:05d}.jpg'), quality=95)
    with open(osp.join(out_dir, 'README.txt'), 'w') as f:
        f.write(f'mona_mm synthetic shapes, seed={seed}, classes={SHAPES_CLASSES}\n'
                'ade/annotations PNG labels: 0 unlabelled, 1 background, 2..5 the classes '
                'in order; with reduce_zero_label=True: num_classes=5 (background + 4)\n')
    return roots



# ------------------------------------------------------------------------------------------
# Transfer sets for the PEFT study (tools/analysis_tools/peft_study.py): a large *source*
# classification task to pretrain on, and small *target* tasks (classification, semantic and
# instance segmentation) drawn from another distribution, so that what the backbone learned on
# the source matters, as ImageNet pretraining does for the papers' benchmarks.

#: Shapes of the study: the demo's four and four more.
STUDY_SHAPES = SHAPES_CLASSES + ('pentagon', 'hexagon', 'cross', 'diamond')
#: How a study shape is painted.
STUDY_FILLS = ('solid', 'stripes', 'checker', 'dots', 'outline', 'gradient', 'rings')
#: Classes of the source task: every study shape in every fill, ``<shape>-<fill>`` (56).
SOURCE_CLASSES = tuple(f'{s}-{f}' for s in STUDY_SHAPES for f in STUDY_FILLS)
#: Fills of the target scenes: without ``outline``, a mask is what one sees of the object.
SCENE_FILLS = tuple(f for f in STUDY_FILLS if f != 'outline')
#: The file :func:`generate_study_shapes` writes last, with its arguments.
STUDY_STAMP = 'study_shapes.json'

# Every (part, split) draws from its own random stream, and every image from its own child
# stream: a split does not change when another one grows, and k shots per class are the first
# k of k + 1 shots.
_STREAMS = {('source', 'train'): 1, ('source', 'val'): 2, ('cls', 'train'): 3,
            ('cls', 'val'): 4, ('cls', 'test'): 5, ('scene', 'train'): 6,
            ('scene', 'val'): 7, ('scene', 'test'): 8}


def _stream(seed: int, part: str, split: str, *index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAMS[(part, split)], *index])


def _colour(rng: np.random.Generator, domain: str, light: bool = True) -> np.ndarray:
    """Saturated colours; the source's warm (red to yellow-green hues), the targets' cool
    (green to purple), light or dark (``light``) so they stand out against a background of
    the other brightness."""
    import colorsys
    if domain == 'source':
        hsv = rng.uniform(-0.1, 0.35) % 1.0, rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0)
    else:
        value = rng.uniform(0.85, 1.0) if light else rng.uniform(0.3, 0.5)
        hsv = rng.uniform(0.4, 0.85), rng.uniform(0.6, 1.0), value
    return np.array(colorsys.hsv_to_rgb(*hsv), dtype=np.float32) * 255


def _smooth_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """The source background: low-frequency colour noise (the demo's without its stripes,
    which a striped fill could be mistaken for)."""
    coarse = rng.uniform(40, 200, size=(4, 4, 3)).astype(np.float32)
    img = np.array(Image.fromarray(coarse.astype(np.uint8)).resize((size, size),
                                                                    Image.BICUBIC),
                   dtype=np.float32)
    return np.clip(img + rng.normal(0, 6, size=img.shape), 0, 255).astype(np.uint8)


def _clutter_background(rng: np.random.Generator, size: int, light: bool) -> np.ndarray:
    """The target background for objects that are ``light`` (or dark): the source's smooth
    colour noise, washed out and moved to the other brightness, with fine noise and a few
    distractor strokes and blobs that belong to no class (drawn before the objects, so they
    are background)."""
    low, high = (30, 110) if light else (150, 230)
    base = _smooth_background(rng, size).astype(np.float32)
    grey = base.mean(axis=2, keepdims=True)
    base = 0.5 * grey + 0.5 * base  # less saturated than the source's
    img = low + (base - base.min()) * (high - low) / max(float(np.ptp(base)), 1.0)
    img = img + rng.normal(0, 8, size=img.shape)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(1, 4))):
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, size, size=4))
        draw.line([(x0, y0), (x1, y1)], width=1,
                  fill=tuple(int(c) for c in _colour(rng, 'target', bool(rng.integers(2)))))
    for _ in range(int(rng.integers(0, 3))):
        cx, cy = (float(v) for v in rng.uniform(0, size, size=2))
        # smaller than the smallest object, so a blob is not mistaken for a circle
        rx, ry = (float(v) for v in rng.uniform(0.01, 0.03, size=2) * size)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry],
                     fill=tuple(int(c) for c in _colour(rng, 'target', bool(rng.integers(2)))))
    return np.asarray(pil)


def _mask(pts: Sequence[Tuple[float, float]], size: int) -> np.ndarray:
    m = Image.new('L', (size, size), 0)
    ImageDraw.Draw(m).polygon(pts, fill=1)
    return np.asarray(m).astype(bool)


def _texture(rng: np.random.Generator, fill: str, size: int, colour: np.ndarray, cx: float,
             cy: float, r: float, contrast: float) -> np.ndarray:
    """The whole image painted in ``fill`` around (cx, cy): ``colour`` and a darker (or, for
    a dark colour, lighter) one, ``contrast`` of the way to black (white)."""
    second = colour * (1 - contrast) if colour.mean() > 110 else \
        colour + (255 - colour) * contrast
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta = rng.uniform(0, math.pi)
    u = (xx - cx) * math.cos(theta) + (yy - cy) * math.sin(theta)
    v = (yy - cy) * math.cos(theta) - (xx - cx) * math.sin(theta)
    half = max(1.5, r * float(rng.uniform(0.2, 0.3)))  # half a period
    if fill in ('solid', 'outline'):
        t = np.zeros_like(u)
    elif fill == 'stripes':
        t = np.floor(u / half) % 2
    elif fill == 'checker':
        t = (np.floor(u / half) + np.floor(v / half)) % 2
    elif fill == 'dots':
        p = 2 * half
        t = (np.hypot(u % p - half, v % p - half) < 0.6 * half).astype(np.float32)
    elif fill == 'gradient':
        t = np.clip((u + r) / (2 * r), 0, 1)
    elif fill == 'rings':
        t = np.floor(np.hypot(u, v) / half) % 2
    else:
        raise ValueError(f'unknown fill {fill!r}; fills: {STUDY_FILLS}')
    return colour * (1 - t[..., None]) + second * t[..., None]


def _paint(img: np.ndarray, rng: np.random.Generator, kind: str, fill: str, cx: float,
           cy: float, r: float, domain: str, light: bool = True) -> List[Tuple[float, float]]:
    """Paint one shape into ``img`` (float, in place); return its outline polygon."""
    size = img.shape[0]
    angle = rng.uniform(0, 2 * math.pi)
    pts = _polygon(kind, cx, cy, r, angle)
    region = _mask(pts, size)
    if fill == 'outline':  # a band: the background shows through the middle
        region &= ~_mask(_polygon(kind, cx, cy, r * 0.6, angle), size)
    # target patterns are fainter, so the silhouette stays against the background
    tex = _texture(rng, fill, size, _colour(rng, domain, light), cx, cy, r,
                   0.65 if domain == 'source' else 0.35)
    img[region] = tex[region]
    return pts


def _study_object(rng: np.random.Generator, size: int, shape: str, fill: str,
                  domain: str) -> np.ndarray:
    """One shape on a background: the source and target classification images."""
    light = bool(rng.integers(2))
    if domain == 'source':
        img = _smooth_background(rng, size).astype(np.float32)
        r = rng.uniform(0.28, 0.42) * size
    else:
        img = _clutter_background(rng, size, light).astype(np.float32)
        r = rng.uniform(0.22, 0.36) * size
    cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
    _paint(img, rng, shape, fill, cx, cy, r, domain, light)
    img += rng.normal(0, 4, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _study_scene(rng: np.random.Generator, size: int,
                 max_shapes: int) -> Tuple[np.ndarray, np.ndarray, List[dict]]:
    """A target scene: 1..max_shapes shapes of :data:`SHAPES_CLASSES` in target colours,
    smaller than the source's (no overlaps, so the polygons are the visible masks), on the
    target background."""
    light = bool(rng.integers(2))
    img = _clutter_background(rng, size, light).astype(np.float32)
    label = Image.new('L', (size, size), 1)  # 1 = background class, as generate_shapes
    ldraw = ImageDraw.Draw(label)
    objects: List[dict] = []
    boxes: List[Tuple[float, float, float, float]] = []
    n = int(rng.integers(1, max_shapes + 1))
    for _ in range(n * 10):
        if len(objects) == n:
            break
        cls = int(rng.integers(len(SHAPES_CLASSES)))
        r = rng.uniform(0.12, 0.22) * size
        cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
        box = (cx - r, cy - r, cx + r, cy + r)
        if any(not (box[2] + 2 < b[0] or b[2] + 2 < box[0] or box[3] + 2 < b[1]
                    or b[3] + 2 < box[1]) for b in boxes):
            continue
        fill = SCENE_FILLS[int(rng.integers(len(SCENE_FILLS)))]
        pts = _paint(img, rng, SHAPES_CLASSES[cls], fill, cx, cy, r, 'target', light)
        ldraw.polygon(pts, fill=2 + cls)
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        boxes.append(box)
        objects.append(dict(cls=cls, box=(min(xs), min(ys), max(xs), max(ys)), polygon=pts))
    img += rng.normal(0, 4, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), np.asarray(label), objects


def generate_study_shapes(out_dir: str, source_per_class: int = 120,
                          source_val_per_class: int = 4, source_size: int = 56,
                          shots: int = 32, cls_val_per_class: int = 20,
                          cls_test_per_class: int = 50, cls_size: int = 56,
                          scene_size: int = 96, train_scenes: int = 40, val_scenes: int = 30,
                          test_scenes: int = 60, max_shapes: int = 3,
                          seed: int = 0) -> Dict[str, str]:
    """Write the study's source and target sets (PNG images) and return their roots.

    *Source* (``source/cls``, class folders, ``train``/``val``): one large shape per image,
    56 classes :data:`SOURCE_CLASSES` (8 shapes x 7 fills), warm colours (red to yellow-green)
    on smooth colour noise. *Targets* differ in colours (cool: green to purple), background
    (washed out, of the other brightness than the objects, with distractor strokes and
    blobs), fainter fill patterns and smaller objects, and their training splits are small
    (few-shot), each with ``train``/``val``/``test`` splits:

    * ``target/cls``: class folders of the 4 :data:`SHAPES_CLASSES` (any fill), ``shots``
      training images per class;
    * ``target/coco`` and ``target/ade``: the same scenes, 1..``max_shapes`` shapes of
      :data:`SHAPES_CLASSES` each, as COCO instances (``annotations/instances_<split>.json``,
      images in ``<split>/``) and ADE20K-style folders (``images/<split>``,
      ``annotations/<split>``; labels as :func:`generate_shapes`: 1 background, 2..5 shapes).

    The output depends only on the arguments, and every split and class draws from its own
    random stream: a split does not change when another one is resized, and ``shots=k``
    takes the first k images of ``shots=k+1``. ``study_shapes.json`` (the arguments) is
    written last, so its presence marks a complete set; ``source/`` and ``target/`` under
    ``out_dir`` are written from scratch.

    Args:
        out_dir: Root folder; created if needed.
        source_per_class: Source training images per class.
        source_val_per_class: Source validation images per class.
        source_size: Side of source images.
        shots: Target classification training images per class.
        cls_val_per_class: Target classification validation images per class.
        cls_test_per_class: Target classification test images per class.
        cls_size: Side of target classification images.
        scene_size: Side of target scenes (segmentation and detection).
        train_scenes: Target training scenes.
        val_scenes: Target validation scenes.
        test_scenes: Target test scenes.
        max_shapes: Most shapes per target scene.
        seed: Random seed.

    Returns:
        ``{'source': ..., 'cls': ..., 'coco': ..., 'ade': ...}`` folder paths.
    """
    args = dict(source_per_class=source_per_class, source_val_per_class=source_val_per_class,
                source_size=source_size, shots=shots, cls_val_per_class=cls_val_per_class,
                cls_test_per_class=cls_test_per_class, cls_size=cls_size,
                scene_size=scene_size, train_scenes=train_scenes, val_scenes=val_scenes,
                test_scenes=test_scenes, max_shapes=max_shapes, seed=seed)
    for name, value in args.items():
        low = 0 if name == 'seed' else 1
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
            raise ValueError(f'generate_study_shapes: {name} must be an int >= {low}, got '
                             f'{value!r}')
    roots = dict(source=osp.join(out_dir, 'source', 'cls'),
                 cls=osp.join(out_dir, 'target', 'cls'),
                 coco=osp.join(out_dir, 'target', 'coco'),
                 ade=osp.join(out_dir, 'target', 'ade'))
    stamp = osp.join(out_dir, STUDY_STAMP)
    if osp.exists(stamp):
        os.remove(stamp)  # incomplete until rewritten at the end
    for part in ('source', 'target'):  # no image of an earlier, larger set stays behind
        shutil.rmtree(osp.join(out_dir, part), ignore_errors=True)
    for split, per_class in (('train', source_per_class), ('val', source_val_per_class)):
        for c, name in enumerate(SOURCE_CLASSES):
            d = osp.join(roots['source'], split, name)
            os.makedirs(d, exist_ok=True)
            shape, fill = name.split('-')
            for i in range(per_class):
                img = _study_object(_stream(seed, 'source', split, c, i), source_size, shape,
                                    fill, 'source')
                Image.fromarray(img).save(osp.join(d, f'{name}_{i:05d}.png'))
    for split, per_class in (('train', shots), ('val', cls_val_per_class),
                             ('test', cls_test_per_class)):
        for c, shape in enumerate(SHAPES_CLASSES):
            d = osp.join(roots['cls'], split, shape)
            os.makedirs(d, exist_ok=True)
            for i in range(per_class):
                rng = _stream(seed, 'cls', split, c, i)
                fill = STUDY_FILLS[int(rng.integers(len(STUDY_FILLS)))]
                img = _study_object(rng, cls_size, shape, fill, 'target')
                Image.fromarray(img).save(osp.join(d, f'{shape}_{i:05d}.png'))
    for split, n in (('train', train_scenes), ('val', val_scenes), ('test', test_scenes)):
        img_dir = osp.join(roots['coco'], split)
        ade_img = osp.join(roots['ade'], 'images', split)
        ade_ann = osp.join(roots['ade'], 'annotations', split)
        for d in (img_dir, ade_img, ade_ann):
            os.makedirs(d, exist_ok=True)
        scenes = []
        for i in range(n):
            img, label, objs = _study_scene(_stream(seed, 'scene', split, i), scene_size,
                                            max_shapes)
            name = f'{split}_{i:05d}'
            Image.fromarray(img).save(osp.join(img_dir, name + '.png'))
            Image.fromarray(img).save(osp.join(ade_img, name + '.png'))
            Image.fromarray(label).save(osp.join(ade_ann, name + '.png'))
            scenes.append((name + '.png', img, objs))
        _write_coco(roots['coco'], split, scenes)
    with open(stamp + '.tmp', 'w') as f:
        json.dump(args, f, indent=1, sort_keys=True)
    os.replace(stamp + '.tmp', stamp)
    return roots


def main() -> None:
    parser = argparse.ArgumentParser(
        description='Generate the synthetic shapes dataset in COCO, Pascal VOC, ADE20K '
        '(labels: 1 = background, 2..5 = shapes; num_classes=5 with reduce_zero_label) and '
        'class-folder formats.')
    parser.add_argument('out_dir', nargs='?', default='data/shapes',
                        help='Output folder (default: data/shapes, where the demo configs '
                        'read it).')
    parser.add_argument('--num-train', type=int, default=400,
                        help='Training scenes for detection and segmentation (default: 400).')
    parser.add_argument('--num-val', type=int, default=100,
                        help='Validation scenes for detection and segmentation (default: 100).')
    parser.add_argument('--num-cls-per-class', type=int, default=150,
                        help='Classification training images per shape class; validation '
                        'gets a quarter (default: 150).')
    parser.add_argument('--img-size', type=int, default=128,
                        help='Side of the square scene images in pixels (default: 128).')
    parser.add_argument('--seed', type=int, default=0,
                        help='Random seed: the same seed writes the same files (default: 0).')
    parser.add_argument('--study', action='store_true',
                        help='Write the PEFT study\'s transfer sets instead (a 56-class source '
                        'classification set and shifted few-shot target sets with train/val/'
                        'test splits; generate_study_shapes with its default sizes, --shots '
                        'and --seed); the size options above do not apply.')
    parser.add_argument('--shots', type=int, default=16,
                        help='With --study: target classification training images per class '
                        '(default: 16).')
    args = parser.parse_args()
    if args.study:
        roots = generate_study_shapes(args.out_dir, shots=args.shots, seed=args.seed)
    else:
        roots = generate_shapes(args.out_dir, args.num_train, args.num_val,
                                args.num_cls_per_class, args.img_size, seed=args.seed)
    for k, v in roots.items():
        print(f'{k:5s} -> {v}')


if __name__ == '__main__':
    main()
