from .shapes import SEG_CLASSES, SHAPES_CLASSES, SHAPES_PALETTE, generate_shapes

__all__ = ['SEG_CLASSES', 'SHAPES_CLASSES', 'SHAPES_PALETTE', 'generate_shapes']
