"""One name per PEFT method: the slug of its config folder maps to its registered type and
back, the tools read either, and every shipped config folder is named by its method's slug."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config

from mona_mm.models.peft.names import (EXTRA_TYPES, METHOD_SLUGS, METHOD_TYPES, method_slug,
                                       peft_config, peft_slug)
from mona_mm.registry import PEFT_METHODS
from tests.conftest import ROOT


def test_slugs_and_types_map_both_ways():
    assert METHOD_SLUGS == ('full', 'fixed', 'bitfit', 'norm-tuning', 'partial-1', 'adapter',
                            'lora', 'adaptformer', 'lorand', 'mona')
    for slug, type_name in {**METHOD_TYPES, **EXTRA_TYPES}.items():
        assert PEFT_METHODS.get(type_name) is not None, type_name
        for spelling in (slug, type_name, type_name.lower(), slug.replace('-', '_'),
                         f'mona_mm.{type_name}'):
            assert method_slug(spelling) == slug, spelling
        assert peft_slug(peft_config(slug)) == slug
        assert peft_slug(dict(type=type_name)) == slug
    # every registered method has a slug that builds it again
    for type_name in PEFT_METHODS.module_dict:
        assert peft_config(peft_slug(type_name))['type'] == type_name


def test_partial_carries_its_block_count():
    assert peft_config('partial-1') == dict(type='Partial', num_blocks=1)
    assert peft_config('Partial') == dict(type='Partial', num_blocks=1)
    assert peft_config('partial-3') == dict(type='Partial', num_blocks=3)
    assert peft_slug(dict(type='Partial', num_blocks=2)) == 'partial-2'
    # method settings are not part of the name
    assert peft_slug(dict(type='Mona', hidden_dims=256)) == 'mona'
    assert peft_slug(None) == 'full'


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown PEFT method 'Monaa': use a slug \(full, "
                       r'fixed, .*norm-tuning.*\) or a registered type \(.*NormTuning'):
        method_slug('Monaa')


FOLDERS = sorted(d for d in glob.glob(osp.join(ROOT, 'configs', 'mm*', '*'))
                 if osp.basename(d) not in ('_base_', 'mimi'))


@pytest.mark.parametrize('folder', FOLDERS, ids=lambda d: osp.relpath(d, ROOT))
def test_config_folder_is_its_methods_slug(folder):
    slug = osp.basename(folder)
    assert slug in METHOD_SLUGS
    configs = sorted(glob.glob(osp.join(folder, '*.py')))
    assert configs and all(f'-{slug}' in osp.basename(p) for p in configs)
    # one config per folder is enough to pin the folder to a type (loading is slow)
    assert peft_slug(Config.fromfile(configs[0]).model.backbone.peft) == slug
