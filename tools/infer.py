"""Run a config and checkpoint on images and draw the predictions with the upstream
visualizer of the config's codebase (mmdet, mmseg or mmpretrain).

Every checkpoint kind mona_mm writes works: a runner checkpoint (``epoch_N.pth``), an
adapter-only checkpoint with its pretrained backbone, a MiMi-pruned checkpoint and a
re-parameterised (deploy) checkpoint. A checkpoint that does not fit the config (it matches
no tensor of the model, or leaves a head or the config's adapters untrained) is refused with
the tensors named, rather than drawn with random weights.

Example:
    python tools/infer.py demo.jpg CONFIG epoch_12.pth --out-dir outputs
    python tools/infer.py images/ CONFIG adapters.pth --base-checkpoint PRETRAINED
"""
import argparse

import torch
from mmengine.config import DictAction

import mona_mm  # noqa: F401  (registers our modules and the checkpoint allow-list)
from mona_mm.apis import inference_model, init_model, list_images


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Run a config and checkpoint (full, adapter-only, MiMi-pruned or '
        're-parameterised) on images and save the predictions drawn by the upstream '
        'visualizer of the config\'s codebase.')
    parser.add_argument('images', nargs='+', metavar='IMAGE',
                        help='Image files and/or folders (every image directly inside a '
                        'folder is used).')
    parser.add_argument('config', help='Config file of the model.')
    parser.add_argument('checkpoint',
                        help='Checkpoint of any kind: full (runner), adapter-only, '
                        'MiMi-pruned or re-parameterised (deploy).')
    parser.add_argument('--base-checkpoint', metavar='PRETRAINED',
                        help='Pretrained backbone for an adapter-only checkpoint; by default '
                        'the one the checkpoint records, else the backbone init_cfg of the '
                        'config.')
    parser.add_argument('--force-base', action='store_true',
                        help='Compose an adapter-only checkpoint with --base-checkpoint even '
                        'when its tensors differ from the base the checkpoint records (the '
                        'model is then not the trained one).')
    parser.add_argument('--out-dir', default='outputs', metavar='DIR',
                        help='Folder to write the visualisations to, in its vis/ subfolder '
                        '(default: outputs).')
    parser.add_argument('--device', default='cuda:0' if torch.cuda.is_available() else 'cpu',
                        help='Device to run on (default: cuda:0 if a GPU is available, else '
                        'cpu).')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='Override config entries, key=value pairs such as '
                        'model.test_cfg.rcnn.max_per_img=50.')
    parser.add_argument('--show', action='store_true',
                        help='Also display each visualisation in a window.')
    parser.add_argument('--wait-time', type=float, default=0,
                        help='Seconds each displayed window stays open with --show (default: '
                        '0, until a key is pressed).')
    parser.add_argument('--pred-score-thr', type=float, default=0.3,
                        help='Detection only: boxes and masks scoring below this are not '
                        'drawn (default: 0.3).')
    parser.add_argument('--batch-size', type=int, default=1,
                        help='Images per forward pass (default: 1).')
    return parser.parse_args()


def describe(sample, classes, score_thr: float) -> str:
    """One line saying what the model predicted for an image.

    Args:
        sample: The data sample the inferencer returned for the image.
        classes: Class names of the model (None: label numbers are printed).
        score_thr: Detection only: instances scoring below are not counted as drawn.
    """
    def name(label: int) -> str:
        return classes[label] if classes and label < len(classes) else str(label)

    if 'pred_score' in sample:  # classification
        score, label = sample.pred_score.max(0)
        return f'{name(int(label))} ({float(score):.3f})'
    if 'pred_instances' in sample:  # detection
        scores, labels = sample.pred_instances.scores, sample.pred_instances.labels
        order = scores.argsort(descending=True)[:3]
        best = ', '.join(f'{name(int(labels[i]))} {float(scores[i]):.2f}' for i in order)
        drawn = int((scores >= score_thr).sum())
        return f'{len(scores)} instances, {drawn} drawn (score >= {score_thr})' + \
            (f'; best: {best}' if best else '')
    if 'pred_sem_seg' in sample:  # segmentation
        seg = sample.pred_sem_seg.data
        labels, counts = seg.unique(return_counts=True)
        share = counts.float() / seg.numel()
        return 'pixels: ' + ', '.join(f'{name(int(lb))} {100 * float(s):.1f}%'
                                      for lb, s in zip(labels, share))
    return type(sample).__name__


def main() -> None:
    args = parse_args()
    images = list_images(args.images)
    model = init_model(args.config, args.checkpoint, base_checkpoint=args.base_checkpoint,
                       force_base=args.force_base,
                       device=args.device, cfg_options=args.cfg_options)
    print(f'{args.checkpoint}: {model.checkpoint_kind} checkpoint, {len(images)} image(s)')
    result = inference_model(model, images, out_dir=args.out_dir, show=args.show,
                             wait_time=args.wait_time, pred_score_thr=args.pred_score_thr,
                             batch_size=args.batch_size)
    classes = (model.dataset_meta or {}).get('classes')
    for image, sample in zip(images, result['predictions']):
        print(f'{image}: {describe(sample, classes, args.pred_score_thr)}')
    files = result['visualizations']
    print(f'wrote {len(files)} visualisation(s) to {args.out_dir}:')
    for path in files:
        print(f'  {path}')


if __name__ == '__main__':
    main()
