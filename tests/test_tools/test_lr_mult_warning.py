"""tools/train.py warns (``mona_mm.engine.optimizers.backbone_lr_mult_warning``), once the
runner is built, when a config scales the whole backbone (a full fine-tuning rule such as
Mask2Former's ``custom_keys={'backbone': dict(lr_mult=0.1)}``) while the backbone is a mona_mm PEFT backbone and mmengine's constructor builds the optimizer:
the rule then silently reaches the adapters."""
import importlib.util
import os.path as osp
import types

from mmengine.config import Config

from tests.conftest import ROOT

CFG = osp.join(ROOT, 'configs', 'demo', 'swin-nano-mona_1xb32-10e_shapes-cls.py')
FIX = "optim_wrapper = dict(constructor='mona_mm.PEFTOptimWrapperConstructor')"


def _train_tool():
    spec = importlib.util.spec_from_file_location('_mona_tools_train_lr',
                                                  osp.join(ROOT, 'tools', 'train.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cfg(**optim_wrapper):
    cfg = Config.fromfile(CFG)
    cfg.optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3), **optim_wrapper)
    return cfg


def test_backbone_lr_mult_without_our_constructor_warns(monkeypatch, tmp_path):
    tool = _train_tool()
    rule = dict(paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1, decay_mult=1.0),
                                                'head': dict(lr_mult=10.0)}))
    msg = tool.backbone_lr_mult_warning(_cfg(**rule))
    assert msg.startswith("optim_wrapper.paramwise_cfg.custom_keys['backbone'] (lr_mult=0.1) "
                          'scales every backbone parameter, the adapters of '
                          'mona_mm.PEFTSwinTransformer included') and FIX in msg
    assert "custom_keys['backbone.'] (decay_mult=0.0)" in tool.backbone_lr_mult_warning(_cfg(
        paramwise_cfg=dict(custom_keys={'backbone.': dict(decay_mult=0.0)})))
    # nothing to say: our constructor, no scaling, keys on parts of the backbone, peft=Full
    for quiet in (_cfg(constructor='mona_mm.PEFTOptimWrapperConstructor', **rule),
                  _cfg(paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=1.0)})),
                  _cfg(paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.0)})),
                  _cfg()):
        assert tool.backbone_lr_mult_warning(quiet) is None
    full = _cfg(**rule)
    full.model.backbone.peft = dict(type='Full')
    assert tool.backbone_lr_mult_warning(full) is None

    # tools/train.py logs it through the runner's logger, once, before training
    logged = []

    class Runner:

        @staticmethod
        def from_cfg(cfg):
            return types.SimpleNamespace(
                cfg=cfg, logger=types.SimpleNamespace(warning=logged.append),
                train=lambda: None)

    monkeypatch.setattr(tool, 'Runner', Runner)
    monkeypatch.setattr('sys.argv', [
        'train.py', CFG, '--work-dir', str(tmp_path), '--cfg-options',
        'optim_wrapper.constructor=DefaultOptimWrapperConstructor',
        'optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult=0.1'])
    monkeypatch.setenv('LOCAL_RANK', '0')
    tool.main()
    assert len(logged) == 1 and logged[0].startswith(
        "optim_wrapper.paramwise_cfg.custom_keys['backbone'] (lr_mult=0.1)")
