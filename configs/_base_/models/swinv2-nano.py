# A small Swin V2 for CPU demos and tests (mmpretrain's SwinTransformerV2: post-norm blocks,
# cosine attention, continuous position bias), the Swin-nano's widths and depths. Only a
# variable, so configs can add this base; the demo configs spell out the backbone with it.
swinv2_nano_arch = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
                        extra_norm_every_n_blocks=0)
