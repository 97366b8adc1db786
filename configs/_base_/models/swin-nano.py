# A small Swin for CPU demos and tests: the real architecture, narrow and shallow.
custom_imports = dict(imports=['mona_mm'], allow_failed_imports=False)
# lets `load_from` take a backbone-only Swin checkpoint (init_cfg needs nothing)
custom_hooks = [dict(type='mona_mm.BackboneCheckpointHook')]
swin_nano_arch = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))
