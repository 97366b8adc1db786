from .voc_single_label import VOC2007SingleLabel

# The shapes generator loads on first use, so `python -m mona_mm.datasets.shapes` runs the
# module once (imported here eagerly, runpy would warn that it is already in sys.modules).
_SHAPES = ('SEG_CLASSES', 'SHAPES_CLASSES', 'SHAPES_PALETTE', 'generate_shapes',
           'SOURCE_CLASSES', 'STUDY_FILLS', 'STUDY_SHAPES', 'generate_study_shapes')


def __getattr__(name: str):
    if name in _SHAPES:
        from . import shapes
        return getattr(shapes, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = [
    'SEG_CLASSES', 'SHAPES_CLASSES', 'SHAPES_PALETTE', 'generate_shapes', 'SOURCE_CLASSES',
    'STUDY_FILLS', 'STUDY_SHAPES', 'generate_study_shapes', 'VOC2007SingleLabel'
]
