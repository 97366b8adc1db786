_base_ = '../_base_/retinanet_swin-l-p4-w7_fpn_8xb2-4e_voc0712.py'
# init: no zero-init (every factor kaiming-uniform), as every adapter of the authors' runs
# starts; their code has no LoRand (docs/reproduction.md)
model = dict(backbone=dict(peft=dict(type='LoRand', init='kaiming')))
