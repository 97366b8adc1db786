"""The pretrained backbones the shipped configs read, where they come from, and the error a
missing one gives.

The configs name files under ``$MONA_MM_PRETRAINED`` (default ``data/pretrained``). OpenMMLab
model-zoo files carry the first 8 hex digits of their SHA-256 in their names (their
``publish_model`` convention), which :func:`sha256_matches` checks; Microsoft's Swin files
carry none and no digest is recorded here.
"""
import hashlib
import os
import os.path as osp
from typing import Dict, Optional

#: Environment variable of the folder the configs read pretrained backbones from.
ENV_VAR = 'MONA_MM_PRETRAINED'
DEFAULT_DIR = 'data/pretrained'
#: Where the README documents these files.
README_SECTION = 'README.md, section "Pretrained weights"'

_MICROSOFT = "Microsoft's Swin Transformer release v1.0.0 (the SwinTransformer/storage assets)"

#: file name -> what it is, which configs read it, where to get it, known SHA-256 prefix
PRETRAINED: Dict[str, dict] = {
    'swin_tiny_patch4_window7_224.pth': dict(
        model='Swin-T, ImageNet-1k', configs='the swin-t one-GPU variants',
        source=_MICROSOFT, sha256_prefix=None),
    'swin_base_patch4_window7_224_22k.pth': dict(
        model='Swin-B, ImageNet-22k', configs='COCO Cascade Mask R-CNN (all methods)',
        source=_MICROSOFT, sha256_prefix=None),
    'swin_large_patch4_window7_224_22k.pth': dict(
        model='Swin-L, ImageNet-22k',
        configs='VOC RetinaNet, ADE20K UperNet, Flowers/Pets/VOC2007 classification',
        source=_MICROSOFT, sha256_prefix=None),
    'vit-base-p16_in21k-pre-3rdparty_ft-64xb64_in1k-384_20210928-98e8652b.pth': dict(
        model='ViT-B/16, ImageNet-21k pretrained, ImageNet-1k fine-tuned (mmpretrain)',
        configs='the vit-b16 / vit-b-p16 configs (mmseg and mmpretrain)',
        source='mim download mmpretrain --config vit-base-p16_in21k-pre_3rdparty_in1k-384px '
               '--dest data/pretrained',
        sha256_prefix='98e8652b'),
    'vit-base-p14_dinov2-pre_3rdparty_20230426-ba246503.pth': dict(
        model='DINOv2 ViT-B/14 (mmpretrain)', configs='the vit-b-p14-dinov2 configs',
        source='mim download mmpretrain --config vit-base-p14_dinov2-pre_3rdparty '
               '--dest data/pretrained',
        sha256_prefix='ba246503'),
}


def pretrained_dir() -> str:
    """The folder the configs read pretrained backbones from (``$MONA_MM_PRETRAINED``)."""
    return os.environ.get(ENV_VAR) or DEFAULT_DIR


def sha256_of(path: str, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file.

    Args:
        path: The file.
        chunk: Read size in bytes.
    """
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def sha256_matches(path: str, digest: Optional[str] = None) -> Optional[bool]:
    """Whether a known file's SHA-256 starts with the prefix its release records; None when
    nothing is recorded for it.

    Args:
        path: The file (its base name selects the entry of :data:`PRETRAINED`).
        digest: Its digest if already computed.
    """
    prefix = PRETRAINED.get(osp.basename(path), {}).get('sha256_prefix')
    if prefix is None:
        return None
    return (digest or sha256_of(path)).startswith(prefix)


def _in_pretrained_dir(path: str) -> bool:
    """Whether ``path`` lies in the folder ``$MONA_MM_PRETRAINED`` names (where the shipped
    configs look), so that the variable decides where it is read from."""
    folder = osp.abspath(pretrained_dir())
    return osp.abspath(path).startswith(folder + os.sep)


def missing_pretrained_message(path: str) -> str:
    """The message for a pretrained backbone file that does not exist.

    A path in the ``$MONA_MM_PRETRAINED`` folder (the shipped configs) moves with the
    variable; any other path was written into the config (e.g. an upstream config's
    ``pretrain/...``), so the message says how to override it instead.

    Args:
        path: The path the config asked for.
    """
    name = osp.basename(path)
    folder = osp.dirname(path) or '.'
    env = os.environ.get(ENV_VAR)
    if _in_pretrained_dir(path):
        where = (f'{ENV_VAR}={env}' if env else f'{ENV_VAR} is not set, so the shipped '
                 f'configs read {DEFAULT_DIR}/')
        msg = (f'pretrained backbone checkpoint {path} does not exist ({where}). Put the file '
               f'in {folder}/ or point {ENV_VAR} at the folder that holds it '
               f'(export {ENV_VAR}=/path/to/pretrained).')
    else:  # the config names this path itself: the variable cannot move it
        msg = (f'pretrained backbone checkpoint {path} does not exist (the config names this '
               f'path itself, so {ENV_VAR} does not change it). Put the file there, or give '
               'its path: --cfg-options model.backbone.init_cfg.checkpoint=/path/to/'
               f'{name} (or model.pretrained=/path/to/{name} where the config sets '
               'model.pretrained); to train from random init instead: --cfg-options '
               'model.backbone.init_cfg=None (and model.pretrained=None where the config '
               'sets model.pretrained).')
    entry = PRETRAINED.get(name)
    if entry:
        msg += f' {name} is {entry["model"]}; get it from: {entry["source"]}.'
    return msg + f' Every expected file and its source: {README_SECTION}.'


def check_pretrained_exists(path: str) -> None:
    """Raise FileNotFoundError with :func:`missing_pretrained_message` when a local
    pretrained file is missing (URLs and other schemes are left to their loaders).

    Args:
        path: The checkpoint path of a backbone's ``init_cfg``.
    """
    if '://' in str(path) or osp.exists(path):
        return
    raise FileNotFoundError(missing_pretrained_message(str(path)))
