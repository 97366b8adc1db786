"""A user's own downstream config switched to Mona by custom_imports + a backbone override,
on the Swin configs as shipped in the installed mmdet, mmseg and mmpretrain."""
import pytest
from mmengine.config import Config

from mona_mm.models import Mona, PEFTSwinTransformer, iter_adapters
from mona_mm.utils import count_trainable
from tests.test_configs.utils import one_train_step

USER_CONFIGS = {
    'mmdet': ("_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'\n"
              "custom_imports = dict(imports=['mona_mm'], allow_failed_imports=False)\n"
              "model = dict(backbone=dict(type='mona_mm.PEFTSwinTransformer'))\n"),
    'mmseg': ("_base_ = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_"
              "ade20k-512x512.py'\n"
              "custom_imports = dict(imports=['mona_mm'], allow_failed_imports=False)\n"
              "model = dict(backbone=dict(type='mona_mm.PEFTSwinTransformer'))\n"),
    'mmpretrain': ("_base_ = 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py'\n"
                   "custom_imports = dict(imports=['mona_mm'], allow_failed_imports=False)\n"
                   "model = dict(backbone=dict(type='mona_mm.PEFTSwinTransformer', "
                   "out_indices=(3, )))\n"),
}


@pytest.mark.parametrize('scope', sorted(USER_CONFIGS))
def test_user_config_switched_to_mona(scope, tmp_path, shapes_workspace):
    path = tmp_path / f'my_{scope}_config.py'
    path.write_text(USER_CONFIGS[scope])
    cfg = Config.fromfile(str(path))
    assert cfg.default_scope == scope  # the downstream scope is kept
    cfg.model.backbone.init_cfg = None  # the shipped configs point at a download URL
    model = one_train_step(cfg, shapes_workspace)
    bb = model.backbone
    assert isinstance(bb, PEFTSwinTransformer) and bb.arch['embed_dims'] == 96
    adapters = list(iter_adapters(bb))
    assert len(adapters) == 2 * 12 and all(isinstance(a, Mona) for _, a in adapters)
    expected = sum(sum(p.numel() for p in a.parameters()) for _, a in adapters)
    assert count_trainable(model)['backbone_trainable'] == expected
