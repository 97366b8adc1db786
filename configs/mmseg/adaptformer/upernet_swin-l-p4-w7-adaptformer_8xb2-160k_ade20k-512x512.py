_base_ = '../_base_/upernet_swin-l-p4-w7_8xb2-160k_ade20k-512x512.py'
# the authors' baseline settings: lr 6e-5, drop path 0.3
# init: both projections trunc-normal (std 0.02), zero biases, as the authors' runs start
model = dict(backbone=dict(peft=dict(type='AdaptFormer', init='trunc_normal'), drop_path_rate=0.3))
optim_wrapper = dict(optimizer=dict(lr=6e-5))
