_base_ = '../_base_/upernet_swin-l-p4-w7_8xb2-160k_ade20k-512x512.py'
# the authors' baseline settings: lr 6e-5, drop path 0.3
# init: no zero-init (every factor kaiming-uniform), as every adapter of the authors' runs
# starts; their code has no LoRand (docs/reproduction.md)
model = dict(backbone=dict(peft=dict(type='LoRand', init='kaiming'), drop_path_rate=0.3))
optim_wrapper = dict(optimizer=dict(lr=6e-5))
