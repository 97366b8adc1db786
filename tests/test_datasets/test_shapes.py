import hashlib
import json
import os.path as osp

import numpy as np
from PIL import Image

from mona_mm.datasets import SHAPES_CLASSES, generate_shapes


def _digest(root):
    with open(osp.join(root, 'coco', 'annotations', 'instances_train.json'), 'rb') as f:
        return hashlib.sha1(f.read()).hexdigest()


def test_deterministic(tmp_path):
    a = generate_shapes(str(tmp_path / 'a'), num_train=4, num_val=2, num_cls_per_class=2, seed=5)
    b = generate_shapes(str(tmp_path / 'b'), num_train=4, num_val=2, num_cls_per_class=2, seed=5)
    generate_shapes(str(tmp_path / 'c'), num_train=4, num_val=2, num_cls_per_class=2, seed=6)
    assert _digest(tmp_path / 'a') == _digest(tmp_path / 'b') != _digest(tmp_path / 'c')
    assert set(a) == set(b) == {'coco', 'voc', 'ade', 'cls'}


def test_coco_annotations_consistent_with_masks(shapes_workspace):
    root = shapes_workspace / 'data' / 'shapes'
    ann = json.loads((root / 'coco' / 'annotations' / 'instances_train.json').read_text())
    assert [c['name'] for c in ann['categories']] == list(SHAPES_CLASSES)
    assert len(ann['images']) == 8 and len(ann['annotations']) >= 8
    from pycocotools import mask as mask_utils
    for a in ann['annotations']:
        img = next(i for i in ann['images'] if i['id'] == a['image_id'])
        rle = mask_utils.frPyObjects(a['segmentation'], img['height'], img['width'])
        m = mask_utils.decode(mask_utils.merge(rle))
        ys, xs = np.nonzero(m)
        x, y, w, h = a['bbox']
        assert abs(xs.min() - x) <= 2 and abs(xs.max() + 1 - (x + w)) <= 2
        assert abs(ys.min() - y) <= 2 and abs(ys.max() + 1 - (y + h)) <= 2


def test_real_dataset_classes_read_every_format(shapes_workspace):
    root = str(shapes_workspace / 'data' / 'shapes')
    from mmdet.datasets import CocoDataset, VOCDataset
    from mmpretrain.datasets import CustomDataset
    from mmseg.datasets import BaseSegDataset
    meta = dict(classes=SHAPES_CLASSES)
    coco = CocoDataset(data_root=root + '/coco', ann_file='annotations/instances_val.json',
                       data_prefix=dict(img='val/'), metainfo=meta, pipeline=[])
    assert len(coco) == 4 and coco[0]['instances']
    voc = VOCDataset(data_root=root + '/VOCdevkit', ann_file='VOC2007/ImageSets/Main/test.txt',
                     data_prefix=dict(sub_data_root='VOC2007/'), metainfo=meta, pipeline=[])
    assert len(voc) == 4 and voc[0]['instances']
    seg = BaseSegDataset(data_root=root + '/ade', img_suffix='.jpg', seg_map_suffix='.png',
                         data_prefix=dict(img_path='images/validation',
                                          seg_map_path='annotations/validation'),
                         metainfo=dict(classes=('background', ) + SHAPES_CLASSES),
                         reduce_zero_label=True, pipeline=[])
    assert len(seg) == 4
    label = np.array(Image.open(seg[0]['seg_map_path']))
    assert set(np.unique(label)) <= {1, 2, 3, 4, 5} and 1 in label
    cls = CustomDataset(data_root=root + '/cls', data_prefix='train', pipeline=[])
    assert cls.CLASSES == SHAPES_CLASSES or tuple(cls.metainfo['classes']) == tuple(
        sorted(SHAPES_CLASSES))
    assert len(cls) == 8 * 4


def test_command_line_runs_clean(tmp_path):
    """`python -m mona_mm.datasets.shapes` writes the data and prints no warning (runpy warns
    when the package has imported the module it is about to run)."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    proc = subprocess.run(
        [sys.executable, '-W', 'error::RuntimeWarning', '-m', 'mona_mm.datasets.shapes', str(tmp_path / 's'),
         '--num-train', '2', '--num-val', '1', '--num-cls-per-class', '1'],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert 'Warning' not in proc.stderr, proc.stderr
    assert (tmp_path / 's' / 'ade' / 'annotations' / 'training' / 'train_00000.png').exists()
    assert 'num_classes=5' in (tmp_path / 's' / 'README.txt').read_text()


def _bytes(path):
    with open(path, 'rb') as f:
        return f.read()


def test_study_sets_deterministic_nested_and_shifted(tmp_path):
    import os

    from mona_mm.datasets import SOURCE_CLASSES, STUDY_SHAPES, generate_study_shapes
    assert set(SHAPES_CLASSES) < set(STUDY_SHAPES) and len(STUDY_SHAPES) == 8
    kw = dict(source_per_class=1, source_val_per_class=1, source_size=32, shots=2,
              cls_val_per_class=1, cls_test_per_class=1, cls_size=32, scene_size=64,
              train_scenes=2, val_scenes=1, test_scenes=1)
    a = generate_study_shapes(str(tmp_path / 'a'), **kw)
    again = generate_study_shapes(str(tmp_path / 'again'), **kw)
    fewer = generate_study_shapes(str(tmp_path / 'fewer'), **dict(kw, shots=1, test_scenes=2))
    other = generate_study_shapes(str(tmp_path / 'other'), **dict(kw, seed=1))
    # the source task: every shape in every fill
    assert len(SOURCE_CLASSES) == 56 and len(set(SOURCE_CLASSES)) == 56
    assert sorted(os.listdir(osp.join(a['source'], 'train'))) == sorted(SOURCE_CLASSES)
    # the same arguments write the same files; another seed others
    ann = osp.join('annotations', 'instances_train.json')
    assert _bytes(osp.join(a['coco'], ann)) == _bytes(osp.join(again['coco'], ann)) != \
        _bytes(osp.join(other['coco'], ann))
    # 1 shot is the first of 2 shots, and resizing one split leaves the others alone
    assert sorted(os.listdir(osp.join(a['cls'], 'test'))) == sorted(SHAPES_CLASSES)
    for shape in SHAPES_CLASSES:
        got = sorted(os.listdir(osp.join(fewer['cls'], 'train', shape)))
        assert got == [f'{shape}_00000.png']
        assert _bytes(osp.join(a['cls'], 'train', shape, got[0])) == \
            _bytes(osp.join(fewer['cls'], 'train', shape, got[0]))
    for split in ('val', 'test'):
        name = f'{split}_00000.png'
        assert _bytes(osp.join(a['coco'], split, name)) == \
            _bytes(osp.join(fewer['coco'], split, name))
    # train / val / test in both scene formats; ADE labels 1 (background) .. 5
    for split in ('train', 'val', 'test'):
        coco = json.loads(open(osp.join(a['coco'], 'annotations',
                                        f'instances_{split}.json')).read())
        assert [c['name'] for c in coco['categories']] == list(SHAPES_CLASSES)
        assert coco['annotations'] and all(x['area'] > 0 for x in coco['annotations'])
        label = np.array(Image.open(osp.join(a['ade'], 'annotations', split,
                                             f'{split}_00000.png')))
        assert set(np.unique(label)) <= {1, 2, 3, 4, 5} and len(np.unique(label)) > 1
    # the shift: the targets' object colours have other hues than the source's
    import colorsys

    from mona_mm.datasets.shapes import _colour
    rng = np.random.default_rng(0)
    hues = {d: [(colorsys.rgb_to_hsv(*(_colour(rng, d, light) / 255))[0] + 0.1) % 1.0
                for _ in range(100) for light in (True, False)] for d in ('source', 'target')}
    # (hues turned by 0.1, so the source's magenta-red-yellow range does not wrap)
    assert max(hues['source']) < min(hues['target'])
    with open(osp.join(str(tmp_path / 'a'), 'study_shapes.json')) as f:
        assert json.load(f)['shots'] == 2
