"""HiViT (mmpretrain ``HiViT``): a hierarchical ViT whose early stages are MLP-only.

``blocks`` holds, in forward order, the early stages' ``BlockWithRPE`` without attention
(``attn`` and ``norm1`` are None; ``x = x + drop_path(mlp(norm2(x)))`` on (B, N, i, i, C)
maps: each patch's i x i sub-patches), a ``PatchMerge`` after each early stage, then the main
stage's ``BlockWithRPE`` on (B, N, C) tokens: ``x = x + drop_path(attn(norm1(x), rpe_index))``
then ``x = x + drop_path(mlp(norm2(x)))`` (each branch times ``gamma_1``/``gamma_2`` with layer
scale), the adds in the block's own code and one drop path for both branches, as on EVA-02.

Adapters go in the main-stage blocks only (``block_has=('attn', )``), at EVA-02's points: Mona
after the attention residual (a ``stream`` point: the stream entering ``norm2``, the
difference added to the drop path's next output) and after the block, on the main grid of
H/16 x W/16 tokens (the embedding's input over its patch size: HiViT's embedding returns
sub-patch maps, not the grid); Adapter on the attention and MLP outputs (before the layer
scale), AdaptFormer beside the MLP, LoRA on q and v of ``attn.qkv`` (the attention calls the
layer: ``qkv = self.qkv(x)``).

The early blocks stay without adapters: they are HiViT's hierarchical patch embedding. By
design nothing before the main stage mixes patches (so masked patches can be dropped from the
input, as mmpretrain's ``MAEHiViT`` does), which Mona's depthwise convs on the full-resolution
map would break, while on each patch's own 4 x 4 or 2 x 2 grid its 3/5/7 kernels would see
mostly padding; and each method then finds the same points in every block (Adapter and LoRA
need the attention the early blocks lack). They are frozen like the patch embedding under the
adapter methods; Full trains them, BitFit and NormTuning tune their biases and norms as
everywhere else. ``MAEHiViT`` (its main stage sees only the kept patches: no grid for Mona) is
not registered.
"""
from ..spec import BackboneSpec, register_spec
from .eva02 import STREAM_POINTS

HIVIT = register_spec(
    BackboneSpec(
        name='HiViT',
        blocks=(r'blocks\.\d+', ),
        points=STREAM_POINTS,
        width='norm1',
        layout='tokens',
        grid='patch_embed_input',
        qkv='attn.qkv',
        recompute=dict(attn='attn', ffn='mlp'),
        extra_tokens='none (tokens are the main-stage grid)',
        # PatchMerge sits among the blocks; the MLP-only early blocks take no adapters
        block_classes=('BlockWithRPE', ),
        block_has=('attn', ),
    ),
    'mmpretrain.models.backbones.hivit.HiViT',
)
