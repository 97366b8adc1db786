_base_ = '../_base_/cascade-mask-rcnn_swin-b-p4-w7_fpn_8xb2-3x_coco.py'
# init: no zero-init (every factor kaiming-uniform), as every adapter of the authors' runs
# starts; their code has no LoRand (docs/reproduction.md)
model = dict(backbone=dict(peft=dict(type='LoRand', init='kaiming')))
