_base_ = '../_base_/retinanet_swin-l-p4-w7_fpn_8xb2-4e_voc0712.py'
# init: both projections trunc-normal (std 0.02), zero biases, as the authors' runs start
model = dict(backbone=dict(peft=dict(type='Adapter', init='trunc_normal')))
