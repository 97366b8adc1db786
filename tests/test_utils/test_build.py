"""build_model_from_cfg: the config is left as it is; pretrained=False drops the backbone's
init_cfg on the built model only."""
import os.path as osp

from mmengine.config import Config

from mona_mm.utils import build_model_from_cfg
from tests.conftest import ROOT

CFG = osp.join(ROOT, 'configs', 'demo', 'cascade-mask-rcnn_swin-nano-mona_fpn_1xb4-4e_shapes.py')


def test_pretrained_false_drops_backbone_init_cfg_without_touching_the_config():
    cfg = Config.fromfile(CFG)
    assert cfg.model.backbone.init_cfg['type'] == 'Pretrained'
    model = build_model_from_cfg(cfg, pretrained=False)
    assert model.backbone.init_cfg is None
    assert cfg.model.backbone.init_cfg['type'] == 'Pretrained'
    model = build_model_from_cfg(cfg)
    assert model.backbone.init_cfg['type'] == 'Pretrained'
