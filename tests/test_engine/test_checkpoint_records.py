"""A PEFT backbone's state dict says what it holds (method and settings, adapter widths,
adapter-only + pretrained base), so every loader restores the trained model or refuses."""
from collections import OrderedDict

import pytest
import torch
from mmengine.runner import load_checkpoint

from mona_mm.models import PEFTSwinTransformer
from mona_mm.pruning import get_structure, prune_adapters
from mona_mm.utils import make_adapter_checkpoint, save_checkpoint_file
from tests.conftest import NANO
from tests.test_engine.test_mimi_pruning_hook import ToyDetector, _hook, _runner


def _x():
    return [torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(i))
            for i in range(2)]


def _out(model):
    model.eval()
    with torch.no_grad():
        return model(_x(), [torch.tensor(0.)] * 2)


def _bump(model):
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05)


def _pretrained(tmp_path):
    """A plain pretrained detector checkpoint (no adapters, no mona_mm record)."""
    torch.manual_seed(3)
    full = ToyDetector()
    sd = {k: v for k, v in full.state_dict().items() if '.adapters.' not in k}
    path = tmp_path / 'pretrained_detector.pth'
    torch.save({'state_dict': sd}, path)
    return str(path), full


def test_adapter_only_resume_with_load_from_restores_the_backbone(tmp_path):
    """Pretrained weights given by `load_from` (no init_cfg): --resume from an adapter-only
    checkpoint brings that backbone back, not a random one."""
    path, full = _pretrained(tmp_path)
    hook = dict(type='mona_mm.AdapterCheckpointHook')
    r = _runner(tmp_path / 'wd', hook, max_epochs=1, name='lf1', load_from=path)
    r.train()
    frozen = {k: v.clone() for k, v in r.model.backbone.state_dict().items()
              if '.adapters.' not in k}
    ref = full.backbone.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in frozen.items())
    # --resume (auto): load_from is dropped, as tools/train.py does
    r2 = _runner(tmp_path / 'wd', hook, max_epochs=2, resume=True, name='lf2')
    r2.train()
    assert r2.train_loop.epoch == 2
    now = r2.model.backbone.state_dict()
    assert all(torch.equal(now[k], v) for k, v in frozen.items())


def test_adapter_only_opened_by_plain_load_checkpoint(tmp_path):
    """What init_detector / init_model / the inferencers do: build (no init_cfg) and
    load_checkpoint. The backbone comes from the base the checkpoint records."""
    path, _ = _pretrained(tmp_path)
    model = ToyDetector()
    model.backbone.init_cfg = dict(type='Pretrained', checkpoint=path, prefix='backbone')
    model.init_weights()
    _bump(model)
    ckpt = tmp_path / 'adapters.pth'
    save_checkpoint_file(make_adapter_checkpoint(model), str(ckpt))
    fresh = ToyDetector()
    load_checkpoint(fresh, str(ckpt), map_location='cpu')
    torch.testing.assert_close(_out(fresh), _out(model), rtol=0, atol=0)
    # the base is gone: one error saying how
    (tmp_path / 'pretrained_detector.pth').unlink()
    with pytest.raises(FileNotFoundError, match='--base-checkpoint'):
        load_checkpoint(ToyDetector(), str(ckpt), map_location='cpu')
    # a bare adapter state dict (no record) on a random backbone: refused
    sd = OrderedDict(torch.load(ckpt, weights_only=True)['state_dict'])
    with pytest.raises(ValueError, match='only adapter tensors'):
        ToyDetector().load_state_dict(sd, strict=False)


def test_upstream_inferencer_with_adapter_only_checkpoint(tmp_path, shapes_workspace):
    """mmpretrain's ImageClassificationInferencer on an adapter-only checkpoint predicts what
    the trained model predicts."""
    from mmengine.config import Config
    from mmpretrain.apis import ImageClassificationInferencer
    from mmengine.registry import DefaultScope
    from mmpretrain.utils import register_all_modules
    register_all_modules(init_default_scope=False)

    from mona_mm.utils import build_model_from_cfg
    from tests.conftest import ROOT
    cfg = Config.fromfile(f'{ROOT}/configs/demo/swin-nano-mona_1xb32-10e_shapes-cls.py')
    torch.manual_seed(5)
    src = PEFTSwinTransformer(arch=NANO, peft='Full', codebase='mmpretrain')
    base = tmp_path / 'swin.pth'
    torch.save({'state_dict': src.state_dict()}, base)
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(base))
    model = build_model_from_cfg(cfg)
    model.init_weights()
    _bump(model)
    ckpt = tmp_path / 'adapters.pth'
    save_checkpoint_file(make_adapter_checkpoint(
        model, meta=dict(dataset_meta=dict(classes=['a', 'b', 'c', 'd']))), str(ckpt))
    full = tmp_path / 'full.pth'
    torch.save({'state_dict': model.state_dict()}, full)
    cfg.model.backbone.init_cfg = None  # what a user's inference config looks like
    img = torch.randint(0, 255, (64, 64, 3), dtype=torch.uint8,
                        generator=torch.Generator().manual_seed(0)).numpy()
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        scores = [ImageClassificationInferencer(cfg, pretrained=str(p), device='cpu')(img)[0]
                  ['pred_scores'] for p in (ckpt, full)]
    assert scores[0].tolist() == pytest.approx(scores[1].tolist(), abs=1e-6)


def test_pruned_away_adapters_survive_a_stripped_checkpoint(tmp_path):
    """MiMi removed whole adapters only; the checkpoint's meta is stripped: a plain
    load_checkpoint rebuilds the structure from the state dict's record."""
    torch.manual_seed(0)
    model = ToyDetector()
    _bump(model)
    names = sorted(get_structure(model))
    prune_adapters(model, {n: torch.arange(0) for n in names[::2]})
    torch.save({'state_dict': model.state_dict()}, tmp_path / 'pruned.pth')  # no meta
    fresh = ToyDetector()
    load_checkpoint(fresh, str(tmp_path / 'pruned.pth'), map_location='cpu')
    assert {n: w for n, w in get_structure(fresh).items() if w} == \
        {n: w for n, w in get_structure(model).items() if w}
    torch.testing.assert_close(_out(fresh), _out(model), rtol=0, atol=0)
    # record stripped too: refused, not silently re-initialised
    bare = OrderedDict(model.state_dict())
    with pytest.raises(ValueError, match='none of'):
        ToyDetector().load_state_dict(bare, strict=False)


@pytest.mark.parametrize('trained, asked, says', [
    (dict(type='Mona', hidden_dims=16), dict(type='Mona', hidden_dims=32), 'hidden_dims=16'),
    (dict(type='Mona'), dict(type='Adapter'), 'Mona('),
    (dict(type='Mona'), dict(type='Full'), 'Mona('),
])
def test_adapters_of_another_method_or_settings_are_refused_naming_both(trained, asked, says):
    src = PEFTSwinTransformer(arch=NANO, peft=trained)
    dst = PEFTSwinTransformer(arch=NANO, peft=asked)
    with pytest.raises(ValueError, match='trained with peft=') as e:
        dst.load_state_dict(src.state_dict())
    assert says in str(e.value) and f"built with peft={asked['type']}(" in str(e.value)
    # the same settings spelled differently (defaults, tuple vs list) are the same
    PEFTSwinTransformer(arch=NANO, peft='Mona').load_state_dict(
        PEFTSwinTransformer(arch=NANO, peft=dict(type='Mona', hidden_dims=64,
                                                 kernel_sizes=[3, 5, 7])).state_dict())
    # the init only chooses where training started: not a different model
    PEFTSwinTransformer(arch=NANO, peft=dict(type='Adapter', init='zero_up')).load_state_dict(
        PEFTSwinTransformer(arch=NANO, peft=dict(type='Adapter', init='trunc_normal')).state_dict())
    # weights of a method without adapters are pretrained weights for any method
    PEFTSwinTransformer(arch=NANO, peft=asked).load_state_dict(
        PEFTSwinTransformer(arch=NANO, peft='Full').state_dict(), strict=False)


@pytest.mark.parametrize('trained, asked', [('Mona', 'Adapter'), ('BitFit', 'NormTuning'),
                                            ('Fixed', 'Full')])
def test_resume_with_another_method_names_both(tmp_path, trained, asked):
    safe = dict(type='mona_mm.SafeCheckpointHook', interval=1)
    # MiMi checks before it rebuilds the structure; otherwise SafeCheckpointHook checks
    hook = _hook() if trained == 'Mona' else dict(type='EmptyCacheHook')
    _runner(tmp_path, hook, max_epochs=1, method=trained, checkpoint=safe, name='m').train()
    bad = _runner(tmp_path, hook, max_epochs=2, resume=True, method=asked, checkpoint=safe,
                  name='a')
    with pytest.raises(ValueError, match=rf'trained with peft={trained}\(.*built with '
                       rf'peft={asked}\('):
        bad.train()
