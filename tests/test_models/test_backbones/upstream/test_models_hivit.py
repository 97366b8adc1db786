# Copyright (c) OpenMMLab. All rights reserved.
# mmpretrain 1.2.0 has no backbone test file for HiViT (no tests/test_models/test_backbones/
# test_hivit.py at v1.2.0). Its only HiViT test is the 'hivit-tiny-p16_16xb64_in1k' entry of
# tests/test_models/test_models.py (build, forward, extract_feat and backward of the whole
# classifier); this is that file with only that entry (the others are other backbones) and
# ``get_model`` given the model's own config with its backbone swapped for ours:
# ``PEFTBackbone(<the config's HiViT arguments>, peft='Full')``.
from dataclasses import dataclass

import pytest
import torch

import mmpretrain.models
from mmpretrain.apis import ModelHub
from mmpretrain.apis import get_model as _get_model

from mona_mm.models import is_peft_backbone


def get_model(name):
    """mmpretrain's ``get_model(name)``, the config's backbone ours with ``peft='Full'``."""
    ModelHub._register_mmpretrain_models()
    config = ModelHub.get(name).config
    backbone = dict(config.model.backbone)
    backbone['type'] = 'mmpretrain.' + backbone['type']
    config.model.backbone = dict(
        type='mona_mm.PEFTBackbone', module=backbone, peft='Full')
    model = _get_model(config)
    assert is_peft_backbone(model.backbone)
    return model


@dataclass
class Cfg:
    name: str
    backbone: type
    num_classes: int = 1000
    build: bool = True
    forward: bool = True
    backward: bool = True
    extract_feat: bool = True
    input_shape: tuple = (1, 3, 224, 224)


test_list = [
    Cfg(name='hivit-tiny-p16_16xb64_in1k', backbone=mmpretrain.models.HiViT),
]


@pytest.mark.parametrize('cfg', test_list)
def test_build(cfg: Cfg):
    if not cfg.build:
        return

    model_name = cfg.name
    ModelHub._register_mmpretrain_models()
    assert ModelHub.has(model_name)

    model = get_model(model_name)
    backbone_class = cfg.backbone
    assert isinstance(model.backbone, backbone_class)


@pytest.mark.parametrize('cfg', test_list)
def test_forward(cfg: Cfg):
    if not cfg.forward:
        return

    model = get_model(cfg.name)
    inputs = torch.rand(*cfg.input_shape)
    outputs = model(inputs)
    assert outputs.shape == (1, cfg.num_classes)


@pytest.mark.parametrize('cfg', test_list)
def test_extract_feat(cfg: Cfg):
    if not cfg.extract_feat:
        return

    model = get_model(cfg.name)
    inputs = torch.rand(*cfg.input_shape)
    feats = model.extract_feat(inputs)
    assert isinstance(feats, tuple)
    assert len(feats) == 1


@pytest.mark.parametrize('cfg', test_list)
def test_backward(cfg: Cfg):
    if not cfg.backward:
        return

    model = get_model(cfg.name)
    inputs = torch.rand(*cfg.input_shape)
    outputs = model(inputs)
    outputs.mean().backward()

    for n, x in model.named_parameters():
        assert x.grad is not None, f'No gradient for {n}'
    num_grad = sum(
        [x.grad.numel() for x in model.parameters() if x.grad is not None])
    assert outputs.shape[-1] == cfg.num_classes
    num_params = sum([x.numel() for x in model.parameters()])
    assert num_params == num_grad, 'Some parameters are missing gradients'
    assert not torch.isnan(outputs).any(), 'Output included NaNs'
