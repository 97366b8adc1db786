_base_ = '../_base_/upernet_swin-l-p4-w7_8xb2-160k_ade20k-512x512.py'
model = dict(backbone=dict(peft=dict(type='Mona')))
