"""check_dataset_annotations (run by tools/train.py and tools/test.py before the runner is
built) names the file and the problem where the dataset or OpenCV would fail obscurely: a
COCO file that is empty, not JSON, ``{}``, without categories or classes, or without any
annotation left to train on; an image of 0 bytes, or one so thin that the pipeline's resize
makes it empty."""
import json
import re

import numpy as np
import pytest
from PIL import Image

from mona_mm.datasets.checks import check_dataset_annotations

CATS = [dict(id=1, name='circle')]
IMGS = [dict(id=1, file_name='a.png', width=16, height=16)]
ANNS = [dict(id=1, image_id=1, category_id=1, bbox=[1, 1, 8, 8], area=64, iscrowd=0)]
PIPELINE = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(128, 128),
                                                  keep_ratio=True)]


def _cfg(ann_file, test_mode=False, data_root='', **kw):
    return dict(train_dataloader=dict(dataset=dict(
        type='CocoDataset', data_root=data_root, ann_file=ann_file, test_mode=test_mode,
        data_prefix=dict(img='img/'), metainfo=dict(classes=('circle', )),
        filter_cfg=dict(filter_empty_gt=True, min_size=4), pipeline=PIPELINE, **kw)))


@pytest.mark.parametrize('content, problem', [
    ('', r'is empty \(0 bytes\)'),
    ('{"images": [', r'is not valid JSON \(Expecting value: line 1 column 13 \(char 12\)\)'),
    ('{}', r'is an empty JSON object, `{}` \(a COCO file has `images`, `annotations` and '
     r'`categories`\)'),
    (dict(images=IMGS, annotations=ANNS), r'has no categories \(its `categories` list is '
     r'missing\)'),
    (dict(images=IMGS, annotations=ANNS, categories=[]), r'has no categories \(its '
     r'`categories` list is empty\)'),
    (dict(images=IMGS, annotations=ANNS, categories=[dict(id=1, name='cat')]),
     r"has none of the config's classes \('circle',\) among its categories \['cat'\]"),
])
def test_unusable_coco_files_are_named(tmp_path, content, problem):
    path = tmp_path / 'ann.json'
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ValueError, match=r'^train_dataloader\.dataset\.ann_file '
                       + re.escape(str(path)) + ' ' + problem + r': point ann_file .*'
                       r'--cfg-options train_dataloader\.dataset\.ann_file=<file>\.$'):
        check_dataset_annotations(_cfg(str(path)), ('train_dataloader', ))


def test_no_annotation_left_to_train_on(tmp_path):
    """Training drops images without boxes (filter_empty_gt): no annotation, no data.
    Testing keeps them."""
    path = tmp_path / 'ann.json'
    path.write_text(json.dumps(dict(images=IMGS, annotations=[], categories=CATS)))
    with pytest.raises(ValueError, match='has no annotations, and '
                       'filter_cfg.filter_empty_gt=True drops every image without one, so '
                       'nothing is left to train on'):
        check_dataset_annotations(_cfg(str(path)), ('train_dataloader', ))
    check_dataset_annotations(_cfg(str(path), test_mode=True), ('train_dataloader', ))


def test_size_rule_is_where_opencv_fails():
    """A 3x1000 image resized into 128x128 keeping its ratio gets a side of 0 pixels, and
    OpenCV's resize asserts; 4x1000 gets 1 pixel and passes: the check draws the same line."""
    import cv2
    from mmcv.transforms import Resize

    from mona_mm.datasets.checks import size_problem
    resize = Resize(scale=(128, 128), keep_ratio=True)
    assert resize(dict(img=np.zeros((1000, 4, 3), np.uint8)))['img'].shape == (128, 1, 3)
    assert size_problem(4, 1000, PIPELINE) is None
    with pytest.raises(cv2.error, match='Assertion failed'):
        resize(dict(img=np.zeros((1000, 3, 3), np.uint8)))
    assert size_problem(3, 1000, PIPELINE) == (
        "is 3x1000 pixels, which the pipeline's Resize(scale=(128, 128), keep_ratio=True) "
        "scales to 0x128, an empty image (OpenCV's resize fails with an assertion)")


def test_unusable_images_are_named(tmp_path):
    img = tmp_path / 'img'
    img.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img / 'a.png')
    (img / 'empty.png').write_bytes(b'')
    Image.fromarray(np.zeros((1000, 3, 3), np.uint8)).save(img / 'thin.png')
    (img / 'text.png').write_text('not an image')
    images = IMGS + [dict(id=i, file_name=n, width=16, height=16)  # sizes as recorded
                     for i, n in enumerate(['empty.png', 'thin.png', 'text.png'], 2)]
    path = tmp_path / 'ann.json'
    path.write_text(json.dumps(dict(images=images, annotations=ANNS, categories=CATS)))
    with pytest.raises(ValueError) as err:
        check_dataset_annotations(_cfg('ann.json', data_root=str(tmp_path)),
                                  ('train_dataloader', ))
    msg = str(err.value)
    assert msg.startswith(f'train_dataloader.dataset: image {img}/empty.png is empty (0 '
                          f'bytes); image {img}/thin.png is 3x1000 pixels, which the '
                          "pipeline's Resize(scale=(128, 128), keep_ratio=True) scales to "
                          f'0x128, an empty image'), msg
    assert f'image {img}/text.png cannot be read as an image (UnidentifiedImageError' in msg
    assert msg.endswith('Remove these images from the dataset (or its annotation file) or '
                        'replace them.')
    assert 'a.png' not in msg
    # a size recorded in the annotation file counts too; a folder of images is listed
    path.write_text(json.dumps(dict(images=[dict(IMGS[0], width=1000, height=2)],
                                    annotations=ANNS, categories=CATS)))
    with pytest.raises(ValueError, match=r'image a\.png \(its size in the annotation file\) '
                       r'is 1000x2 pixels'):
        check_dataset_annotations(_cfg(str(path)), ('train_dataloader', ))
    folder = dict(val_dataloader=dict(dataset=dict(
        type='CustomDataset', data_root=str(tmp_path), data_prefix='img', pipeline=[])))
    with pytest.raises(ValueError, match=rf'^val_dataloader\.dataset: image {img}/empty\.png '
                       r'is empty \(0 bytes\); image \S+text\.png cannot be read'):
        check_dataset_annotations(folder, ('val_dataloader', ))
