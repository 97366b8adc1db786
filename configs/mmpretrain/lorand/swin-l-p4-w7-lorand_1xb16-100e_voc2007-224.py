_base_ = '../_base_/swin-l-p4-w7_1xb16-100e_voc2007-224.py'
# init: no zero-init (every factor kaiming-uniform), as every adapter of the authors' runs
# starts; their code has no LoRand (docs/reproduction.md)
model = dict(backbone=dict(peft=dict(type='LoRand', init='kaiming')))
