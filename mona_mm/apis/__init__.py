from .inference import build_inferencer, inference_model, init_model, list_images

__all__ = ['init_model', 'inference_model', 'build_inferencer', 'list_images']
