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

Command line: ``python -m mona_mm.datasets.shapes data/shapes``.
"""
import argparse
import json
import math
import os
import os.path as osp
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
    args = parser.parse_args()
    roots = generate_shapes(args.out_dir, args.num_train, args.num_val,
                            args.num_cls_per_class, args.img_size, seed=args.seed)
    for k, v in roots.items():
        print(f'{k:5s} -> {v}')


if __name__ == '__main__':
    main()
