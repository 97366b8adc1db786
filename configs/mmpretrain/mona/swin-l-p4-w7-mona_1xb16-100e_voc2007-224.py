_base_ = '../_base_/swin-l-p4-w7_1xb16-100e_voc2007-224.py'
model = dict(backbone=dict(peft=dict(type='Mona')))
