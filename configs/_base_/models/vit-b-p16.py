# ViT-B/16 backbones (mmpretrain's VisionTransformer) with Mona, pretrained on ImageNet-21k
# (mmpretrain's checkpoint, mmpretrain layout; it also loads into mmseg's ViT). Only variables
# here, so configs can add this file to their bases.
vit_b16_pretrained = ('{{$MONA_MM_PRETRAINED:data/pretrained}}/'
                      'vit-base-p16_in21k-pre-3rdparty_ft-64xb64_in1k-384_20210928-98e8652b.pth')
vit_b16_cls_backbone = dict(
    _delete_=True, type='mona_mm.PEFTVisionTransformer', arch='b', img_size=224,
    patch_size=16, out_type='cls_token', drop_path_rate=0.1, peft=dict(type='Mona'),
    init_cfg=dict(type='Pretrained', checkpoint=vit_b16_pretrained, prefix='backbone'))
# DINOv2 ViT-B/14 (mmpretrain's conversion of the official weights), at 224 (its 518-px
# position embedding is resized on load)
dinov2_b14_pretrained = ('{{$MONA_MM_PRETRAINED:data/pretrained}}/'
                         'vit-base-p14_dinov2-pre_3rdparty_20230426-ba246503.pth')
dinov2_b14_cls_backbone = dict(
    _delete_=True, type='mona_mm.PEFTVisionTransformer', arch='base', img_size=224,
    patch_size=14, layer_scale_init_value=1e-5, out_type='cls_token', drop_path_rate=0.1,
    peft=dict(type='Mona'),
    init_cfg=dict(type='Pretrained', checkpoint=dinov2_b14_pretrained, prefix='backbone'))
