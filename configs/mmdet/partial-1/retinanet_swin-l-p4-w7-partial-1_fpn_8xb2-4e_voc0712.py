_base_ = '../_base_/retinanet_swin-l-p4-w7_fpn_8xb2-4e_voc0712.py'
model = dict(backbone=dict(peft=dict(type='Partial')))
