# Mona on mmseg's ViT-B/16 UperNet for ADE20K (mmseg's recipe: 512x512, 160k iterations, poly
# decay after a 1500-iter warmup), with the Mona ADE20K lr (3e-4). The ImageNet-21k ViT-B/16
# comes from mmpretrain's checkpoint (attention keys converted, position embedding resized).
_base_ = ['mmseg::vit/vit_vit-b16_mln_upernet_8xb2-160k_ade20k-512x512.py',
          '../../_base_/models/vit-b-p16.py']
custom_imports = dict(imports=['mona_mm'], allow_failed_imports=False)
custom_hooks = [dict(type='mona_mm.BackboneCheckpointHook')]
# atomic saves: a run killed while saving keeps its last complete checkpoint
default_hooks = dict(checkpoint=dict(type='mona_mm.SafeCheckpointHook'))
model = dict(
    pretrained=None,
    backbone=dict(
        type='mona_mm.PEFTVisionTransformer', peft=dict(type='Mona'),
        patch_bias=True,  # the checkpoint's patch embedding has a bias (mmseg's default: none)
        init_cfg=dict(type='Pretrained', checkpoint={{_base_.vit_b16_pretrained}},
                      prefix='backbone')))
optim_wrapper = dict(constructor='mona_mm.PEFTOptimWrapperConstructor', optimizer=dict(lr=3e-4))
