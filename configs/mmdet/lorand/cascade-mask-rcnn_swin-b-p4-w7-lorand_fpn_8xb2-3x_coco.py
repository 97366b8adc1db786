_base_ = '../_base_/cascade-mask-rcnn_swin-b-p4-w7_fpn_8xb2-3x_coco.py'
model = dict(backbone=dict(peft=dict(type='LoRand')))
