from .shapes import SEG_CLASSES, SHAPES_CLASSES, SHAPES_PALETTE, generate_shapes
from .voc_single_label import VOC2007SingleLabel

__all__ = [
    'SEG_CLASSES', 'SHAPES_CLASSES', 'SHAPES_PALETTE', 'generate_shapes', 'VOC2007SingleLabel'
]
