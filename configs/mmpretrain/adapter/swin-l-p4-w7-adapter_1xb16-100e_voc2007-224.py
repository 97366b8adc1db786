_base_ = '../_base_/swin-l-p4-w7_1xb16-100e_voc2007-224.py'
# init: both projections trunc-normal (std 0.02), zero biases, as the authors' runs start
model = dict(backbone=dict(peft=dict(type='Adapter', init='trunc_normal')))
