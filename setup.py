"""Install mona_mm.

``mim train/test/search/list`` look for ``configs/``, ``tools/`` and ``model-index.yml`` under
``mona_mm/.mim`` (mmpretrain's ``add_mim_extension`` scheme): an editable install
(``setup.py develop``, which ``tools/setup_env.sh`` runs through ``pip install -e``) links them to
the repository's folders, a wheel gets copies.
"""
import os
import os.path as osp
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.develop import develop

ROOT = osp.dirname(osp.abspath(__file__))
MIM_FILES = ('configs', 'tools', 'model-index.yml')

# Ranges of the OpenMMLab 2.0 stack mona_mm is written for; requirements/runtime.txt pins the
# versions it is tested with (mmcv is built from source by tools/setup_env.sh).
INSTALL_REQUIRES = [
    'torch>=2.0',
    'torchvision',
    'numpy>=1.23,<2',  # numpy 2 is untested with mmdet 3.3 (requirements/runtime.txt)
    'mmengine>=0.10.0,<1.0.0',
    'mmcv>=2.0.0rc4,<2.2.0',  # mmdet 3.3 and mmseg 1.2.2 refuse mmcv 2.2
    'mmdet>=3.3.0,<3.4.0',
    'mmsegmentation>=1.2.2,<1.3.0',
    'mmpretrain>=1.2.0,<1.3.0',
    'ftfy',  # mmsegmentation imports ftfy and regex without declaring them
    'regex',
    'scipy<1.14',  # mmpretrain 1.2.0 resizes Swin's position tables with interp2d
    'matplotlib',
    'Pillow',
]
# ONNX export and its onnxruntime check (tools/deployment/export_onnx.py): `pip install
# mona_mm[deploy]`; requirements/deploy.txt pins the tested versions.
EXTRAS_REQUIRE = {'deploy': ['onnx>=1.17', 'onnxruntime>=1.20', 'onnxscript>=0.5']}


def add_mim_extension(mim_dir: str, mode: str) -> None:
    """Put ``configs/``, ``tools/`` and ``model-index.yml`` into ``mim_dir``.

    Args:
        mim_dir: The ``mona_mm/.mim`` folder to fill (created if missing).
        mode: ``'symlink'`` links to the repository (editable installs: edits show at once),
            ``'copy'`` copies (wheels).
    """
    os.makedirs(mim_dir, exist_ok=True)
    for name in MIM_FILES:
        src, dst = osp.join(ROOT, name), osp.join(mim_dir, name)
        if not osp.exists(src):
            raise FileNotFoundError(f'{src} is missing: mim needs it in mona_mm/.mim')
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_dir), dst)
        elif mode != 'copy':
            raise ValueError(f"mode must be 'symlink' or 'copy', got {mode!r}")
        elif osp.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        else:
            shutil.copyfile(src, dst)


class BuildPyWithMim(build_py):
    """Copy the mim files into ``<build>/mona_mm/.mim`` when building a wheel."""

    def run(self) -> None:
        super().run()
        # PEP 660 editable wheels import from the repository; mim (0.3.9) cannot find a package
        # installed that way anyway (see DevelopWithMim).
        if not self.editable_mode:
            add_mim_extension(osp.join(self.build_lib, 'mona_mm', '.mim'), 'copy')


class DevelopWithMim(develop):
    """Link the mim files into ``mona_mm/.mim`` for an editable install.

    mim locates a package at ``<distribution location>/mona_mm``. Only ``setup.py develop``
    (pip's editable install of a project without ``pyproject.toml``) puts the distribution's
    location at the repository root, so this is the editable install mim works with.
    """

    def run(self) -> None:
        super().run()
        if not self.uninstall:
            add_mim_extension(osp.join(ROOT, 'mona_mm', '.mim'), 'symlink')


def get_version() -> str:
    """Read ``__version__`` from ``mona_mm/version.py`` without importing the package."""
    ns: dict = {}
    with open(osp.join(ROOT, 'mona_mm', 'version.py')) as f:
        exec(f.read(), ns)
    return ns['__version__']


def read_readme() -> str:
    """The README as the long description ('' when building from a tree without it)."""
    path = osp.join(ROOT, 'README.md')
    if not osp.exists(path):
        return ''
    with open(path) as f:
        return f.read()


setup(
    name='mona_mm',
    version=get_version(),
    description='Mona adapters and MiMi pruning for Swin and ViT backbones on the OpenMMLab '
    '2.0 stack (mmdet, mmsegmentation, mmpretrain)',
    license='Apache-2.0',
    long_description=read_readme(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mona_mm', 'mona_mm.*']),
    include_package_data=True,
    python_requires='>=3.10',
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    cmdclass={'build_py': BuildPyWithMim, 'develop': DevelopWithMim},
    zip_safe=False,
)
