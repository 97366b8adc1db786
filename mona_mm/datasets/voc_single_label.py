"""Pascal VOC2007 as a single-label classification set (Mona paper's classification runs)."""
import os.path as osp
import xml.etree.ElementTree as ET
from typing import List, Optional, Sequence

from mmpretrain.datasets import BaseDataset

from mona_mm.registry import DATASETS

VOC_CLASSES = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair',
               'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
               'sheep', 'sofa', 'train', 'tvmonitor')


@DATASETS.register_module()
class VOC2007SingleLabel(BaseDataset):
    """VOC2007 images, each labelled with the class of its largest non-difficult object.

    The papers treat VOC2007 as single-label without saying how; "largest object" is our
    choice (documented in the README). Images with only difficult objects are skipped.

    Layout: ``data_root/{JPEGImages,Annotations,ImageSets/Main/<split>.txt}``.

    Args:
        data_root: The ``VOC2007`` folder.
        split: ``'train'``, ``'val'``, ``'trainval'`` or ``'test'``.
        classes: Override the 20 VOC classes (e.g. for generated data).
        **kwargs: Passed to mmpretrain's ``BaseDataset``.
    """

    METAINFO = {'classes': VOC_CLASSES}

    def __init__(self, data_root: str, split: str = 'trainval',
                 classes: Optional[Sequence[str]] = None, **kwargs) -> None:
        if split not in ('train', 'val', 'trainval', 'test'):
            raise ValueError(f"VOC2007SingleLabel split must be train/val/trainval/test, got "
                             f"{split!r}")
        self.split = split
        metainfo = kwargs.pop('metainfo', None) or {}
        if classes is not None:
            metainfo = dict(metainfo, classes=tuple(classes))
        super().__init__(ann_file=osp.join('ImageSets', 'Main', f'{split}.txt'),
                         data_root=data_root, metainfo=metainfo, **kwargs)

    def load_data_list(self) -> List[dict]:
        classes = list(self.CLASSES)
        data_list = []
        with open(self.ann_file) as f:
            ids = [ln.strip() for ln in f if ln.strip()]
        for img_id in ids:
            tree = ET.parse(osp.join(self.data_root, 'Annotations', f'{img_id}.xml'))
            best, best_area = None, -1.0
            for obj in tree.findall('object'):
                name = obj.find('name').text
                difficult = obj.find('difficult')
                if name not in classes or (difficult is not None and int(difficult.text)):
                    continue
                bb = obj.find('bndbox')
                x0, y0, x1, y1 = (float(bb.find(k).text) for k in ('xmin', 'ymin', 'xmax',
                                                                     'ymax'))
                area = (x1 - x0) * (y1 - y0)
                if area > best_area:
                    best, best_area = name, area
            if best is None:
                continue
            data_list.append(dict(img_path=osp.join(self.data_root, 'JPEGImages',
                                                    f'{img_id}.jpg'),
                                  gt_label=classes.index(best)))
        return data_list
