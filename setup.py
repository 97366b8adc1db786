"""Install mona_mm.

A non-editable install copies ``configs/`` and ``tools/`` into ``mona_mm/.mim`` so that
``mim train mona_mm <config>`` finds them (same scheme as mmpretrain's ``add_mim_extension``).
"""
import os
import os.path as osp
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = osp.dirname(osp.abspath(__file__))
MIM_FILES = ('configs', 'tools', 'model-index.yml')


class BuildPyWithMim(build_py):
    """Copy configs/ and tools/ into ``<build>/mona_mm/.mim`` for non-editable installs."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        mim_dir = osp.join(self.build_lib, 'mona_mm', '.mim')
        os.makedirs(mim_dir, exist_ok=True)
        for name in MIM_FILES:
            src = osp.join(ROOT, name)
            dst = osp.join(mim_dir, name)
            if osp.isdir(dst):
                shutil.rmtree(dst)
            if osp.isdir(src):
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns('__pycache__'))
            elif osp.isfile(src):
                shutil.copyfile(src, dst)


def get_version() -> str:
    ns: dict = {}
    with open(osp.join(ROOT, 'mona_mm', 'version.py')) as f:
        exec(f.read(), ns)
    return ns['__version__']


setup(
    name='mona_mm',
    version=get_version(),
    description='Mona adapters and MiMi pruning for Swin backbones on the OpenMMLab 2.0 stack',
    long_description=open(osp.join(ROOT, 'README.md')).read() if osp.exists(osp.join(ROOT, 'README.md')) else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mona_mm', 'mona_mm.*']),
    include_package_data=True,
    python_requires='>=3.10',
    # The stack itself is pinned in requirements/runtime.txt and installed by tools/setup_env.sh
    # (mmcv must be compiled against the installed torch, which pip cannot express).
    install_requires=[],
    cmdclass={'build_py': BuildPyWithMim},
    zip_safe=False,
)
