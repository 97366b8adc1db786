_base_ = '../_base_/cascade-mask-rcnn_swin-b-p4-w7_fpn_8xb2-3x_coco.py'
# init: both projections trunc-normal (std 0.02), zero biases, as the authors' runs start
model = dict(backbone=dict(peft=dict(type='Adapter', init='trunc_normal')))
