"""EVA-02 (mmpretrain ``ViTEVA02``): a ViT with rotary positions and a SwiGLU MLP.

Block forward (``layers.<i>``): ``x = x + drop_path(attn(norm1(x), patch_resolution))`` then
``x = x + drop_path(mlp(norm2(x)))``, the adds in the block's own code and one drop-path module
for both branches. So Mona after the attention residual is a ``stream`` point: it rewrites the
stream entering ``norm2``, and the drop path's next output (the MLP branch) gets the
difference added, so the block's add gives ``mona(x) + drop_path(mlp(norm2(mona(x))))``. Mona
after the MLP residual is the block's output; Adapter on the attention and MLP outputs,
AdaptFormer beside the MLP, LoRA on q and v of ``attn.qkv``. The cls token goes through Mona
alone, as on the ViT.
"""
from ..spec import AdapterPoint, BackboneSpec, register_spec
from .beit import convert_beit

#: The points of pre-norm blocks that add both branches in their own code through one drop
#: path (EVA-02, HiViT's main stage).
STREAM_POINTS = dict(
    attn_out=AdapterPoint('output', 'attn'),
    post_attn=AdapterPoint('stream', 'norm2', consumer='drop_path'),
    mlp_parallel=AdapterPoint('parallel', 'mlp'),
    mlp_out=AdapterPoint('output', 'mlp'),
    post_mlp=AdapterPoint('output', ''),
)

EVA02 = register_spec(
    BackboneSpec(
        name='EVA-02',
        blocks=(r'layers\.\d+', ),
        points=STREAM_POINTS,
        width='norm1',
        layout='tokens',
        grid='block_arg',
        qkv='attn.qkv',
        recompute=dict(attn='attn', ffn='mlp'),
        convert=convert_beit,  # mmpretrain's position-embedding load hook, as for BEiT
        extra_tokens='cls token: alone through Mona, as a 1x1 map',
    ),
    'mmpretrain.models.backbones.vit_eva02.ViTEVA02',
)
