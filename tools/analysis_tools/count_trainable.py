"""Print trainable backbone parameters of the PEFT Swin for given archs and methods.

Example: python tools/analysis_tools/count_trainable.py --arch base large --peft Mona
"""
import argparse

import mona_mm  # noqa: F401
from mona_mm.models import PEFTSwinTransformer, iter_adapters
from mona_mm.utils import count_trainable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arch', nargs='+', default=['base', 'large'],
                        choices=sorted(PEFTSwinTransformer.arch_zoo))
    parser.add_argument('--peft', nargs='+', default=['Mona'],
                        help='PEFT method types (registered in mona_mm PEFT_METHODS)')
    args = parser.parse_args()
    print(f"| {'arch':6s} | {'method':8s} | {'adapters':>8s} | {'trainable':>12s} | "
          f"{'backbone':>12s} | {'%':>6s} |")
    print('|' + '|'.join('-' * w for w in (8, 10, 10, 14, 14, 8)) + '|')
    for arch in args.arch:
        for peft in args.peft:
            bb = PEFTSwinTransformer(arch=arch, peft=dict(type=peft))
            c = count_trainable(bb)
            n_ad = len(list(iter_adapters(bb)))
            pct = 100.0 * c['backbone_trainable'] / c['backbone_total']
            print(f"| {arch:6s} | {peft:8s} | {n_ad:8d} | {c['backbone_trainable']:12,d} | "
                  f"{c['backbone_total']:12,d} | {pct:6.2f} |")


if __name__ == '__main__':
    main()
