# A small ViT for CPU demos and tests (mmpretrain's VisionTransformer, patch 16, cls token) on
# the 112-px shapes classification images. Only a variable, so configs can add this base; the
# demo configs spell out the backbone with it (their PEFT method and pretrained weights).
vit_nano_arch = dict(embed_dims=64, num_layers=4, num_heads=2, feedforward_channels=256)
