# The PEFT study on the papers' data with the papers' configs, at a shortened schedule, for
# GPU machines (tools/analysis_tools/peft_study.py, docs/study.md). The backbones start from
# the configs' ImageNet-22k weights (data/pretrained, see README "Pretrained weights"), so
# there is no source-task pretraining; each method runs its own config (configs/<codebase>/
# <method>/, MiMi: configs/<codebase>/mimi/) at its own lr, the middle of its grid.
# Data under data/: flowers102, ade/ADEChallengeData2016, VOCdevkit (README "Data").
# Splits: Flowers-102 has val and test; ADE20K and VOC publish no labelled test set, so their
# official val (ADE20K) / test (VOC07) set is cut in two halves: the first to choose the lr,
# the second to report.
#   python tools/analysis_tools/peft_study.py configs/study/paper.py --shard 0/4  # ... 3/4
_base_ = './cpu.py'
study_name = 'paper'
data = None
_swin = dict(
    cls='configs/mmpretrain/{folder}/swin-l-p4-w7-{method}_1xb16-100e_flowers102-224.py',
    seg='configs/mmseg/{folder}/upernet_swin-l-p4-w7-{method}_8xb2-160k_ade20k-512x512.py',
    det='configs/mmdet/{folder}/retinanet_swin-l-p4-w7-{method}_fpn_8xb2-4e_voc0712.py')
backbones = dict(
    _delete_=True,
    **{'swin-l': dict(pretrain=None, tasks=_swin),
       # the ViT-B/16 (ImageNet-21k) configs; the study sets the method on them
       'vit-b': dict(pretrain=None, tasks=dict(
           cls='configs/mmpretrain/mona/vit-b-p16-mona_1xb16-100e_flowers102-224.py',
           seg='configs/mmseg/mona/upernet_vit-b16-mona_8xb2-160k_ade20k-512x512.py'))})
tasks = dict(
    _delete_=True,
    # 10 of the paper's 100 epochs
    cls=dict(metric='accuracy/top1', epochs=10, lr=None,
             cfg_options={'val_dataloader.dataset.split': 'val',
                          'test_dataloader.dataset.split': 'test'}),
    # 16k of 160k iterations; ADE20K val (2000 images): 1000 to choose, 1000 to report
    seg=dict(metric='mIoU', iters=16000, lr=None,
             cfg_options={'val_dataloader.dataset.indices': 1000,
                          'test_dataloader.dataset.indices': -1000}),
    # 2 of 4 epochs (each 3 passes over VOC07+12 trainval); VOC07 test (4952): 2476 + 2476;
    # MiMi prunes to 4x fewer adapter parameters at once after the first epoch
    det=dict(metric='pascal_voc/mAP', epochs=2, lr=None,
             cfg_options={'val_dataloader.dataset.indices': 2476,
                          'test_dataloader.dataset.indices': -2476},
             mimi=dict(rho=0.75, prune_every=0.5)),
)
estimate_methods = ['mona']
