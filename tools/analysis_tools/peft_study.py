"""Run a PEFT study: every (backbone, task, method, seed) of a study config through mmengine's
Runner, with a cached source-task pretraining per backbone, lrs chosen on the validation
split and test results over seeds; then the tables, the plot and the merged JSON.

Examples:
  python tools/analysis_tools/peft_study.py configs/study/cpu.py            # run / resume
  python tools/analysis_tools/peft_study.py configs/study/cpu.py --estimate # time a few runs
  python tools/analysis_tools/peft_study.py configs/study/cpu.py --shard 0/2  # machine 1 of 2
  python tools/analysis_tools/peft_study.py configs/study/cpu.py --dry-run  # list the runs
  python tools/analysis_tools/peft_study.py --from-json docs/study/cpu.json --out-dir \\
      docs/study --update-docs docs/study.md                                # tables again

Protocol and outputs: docs/study.md and mona_mm/study/study.py.
"""
import argparse
import os
import os.path as osp
import sys
from typing import List, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Run a PEFT study from a study config (configs/study/{smoke,cpu,paper}.py): '
        'pretrain each backbone once on the source task, train every method at each lr of its '
        'grid (seed 0), choose the lr on the validation split, repeat it over the seeds, and '
        'write one JSON per run, the merged JSON, a markdown table per task and a plot. '
        'Finished runs are skipped, so a rerun resumes.')
    parser.add_argument('config', nargs='?',
                        help='The study config (not needed with --from-json).')
    parser.add_argument('--work-dir', metavar='DIR',
                        help='Study folder: results/<key>.json per run, pretrain/, work/ '
                        '(Runner logs), study.json, tables.md, plot.png (default: '
                        'work_dirs/study/<study name>).')
    parser.add_argument('--data-root', metavar='DIR',
                        help='Where the generated data sets go (default: the config\'s '
                        'data.root).')
    parser.add_argument('--shard', metavar='I/N',
                        help='Run only the slots with index %% N == I (the ordered list: every '
                        'lr-search run, then every further seed). Each shard trains the '
                        'pretraining it needs unless pretrain/ already has it; further seeds '
                        'run once their cell\'s lr search is complete in results/.')
    parser.add_argument('--only', nargs='+', metavar='KEY=V1,V2',
                        help='Run only slots matching every filter; keys: backbone, task, '
                        'method, seed, stage (lr or seed). Example: --only task=cls '
                        'method=full,mona.')
    parser.add_argument('--max-runs', type=int, metavar='N',
                        help='Stop after N fine-tuning runs (a sitting); rerun to continue.')
    parser.add_argument('--pretrain-only', action='store_true',
                        help='Only the source-task pretraining (to share pretrain/ between '
                        'machines before sharding).')
    parser.add_argument('--estimate', action='store_true',
                        help='Time the study: pretrain, run the estimate_methods at their '
                        'default lr on every (backbone, task) (ordinary runs of the grid, '
                        'kept), and print the projected time of the whole grid.')
    parser.add_argument('--dry-run', action='store_true',
                        help='List the pretraining and the runs of this shard (further seeds '
                        'once their lr is chosen) with their keys and whether they are done; '
                        'train nothing, generate nothing.')
    parser.add_argument('--from-json', metavar='JSON',
                        help='Reprint the tables and redraw the plot from a merged study JSON; '
                        'no config, no training.')
    parser.add_argument('--out-dir', metavar='DIR',
                        help='Where tables.md and plot.png go (default: the study folder, or '
                        'the JSON\'s folder with --from-json).')
    parser.add_argument('--update-docs', metavar='MD', nargs='+',
                        help='Also rewrite the <!-- study:results -->, <!-- study:figure --> '
                        'and <!-- study:headline --> blocks of this markdown file (e.g. '
                        'docs/study.md), and the blocks further files have (e.g. README.md: '
                        'the headline table).')
    parser.add_argument('--log-level', default='WARNING',
                        help='Log level of the runs\' Runners on the console and in their log '
                        'files (default: %(default)s; INFO shows every iteration log).')
    args = parser.parse_args(argv)
    if args.from_json is None and args.config is None:
        parser.error('give a study config, or --from-json with a merged study JSON')
    if args.max_runs is not None and args.max_runs < 1:
        parser.error('--max-runs must be >= 1')
    return args


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; return the exit status.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).
    """
    args = parse_args(argv)
    from mona_mm.study import Study, load_spec, parse_only, parse_shard, render_json
    if args.from_json:
        out = args.out_dir or osp.dirname(osp.abspath(args.from_json))
        paths = render_json(args.from_json, out, args.update_docs)
        print(f'[study] tables: {paths["tables"]}\n[study] plot: {paths["plot"]}')
        return 0
    try:
        spec = load_spec(args.config, root=ROOT)
        shard = parse_shard(args.shard)
        only = parse_only(args.only)
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    work_dir = args.work_dir or osp.join('work_dirs', 'study', spec.name)
    study = Study(spec, work_dir, data_root=args.data_root, shard=shard, only=only,
                  log_level=args.log_level)
    if args.dry_run:
        print(study.dry_run_text())
        return 0
    result = study.run(max_runs=args.max_runs, pretrain_only=args.pretrain_only,
                       estimate=args.estimate)
    if result['outputs']:
        if args.out_dir or args.update_docs:
            from mona_mm.study.study import render
            from mona_mm.study.store import load_merged
            render(load_merged(osp.join(work_dir, 'study.json')),
                   args.out_dir or work_dir, args.update_docs, echo=lambda _: None,
                   json_name=osp.join(work_dir, 'study.json'))
        print(f'[study] {len(result["trained"])} run(s) trained this time; merged JSON: '
              f'{osp.join(work_dir, "study.json")}; tables: {result["outputs"]["tables"]}; '
              f'plot: {result["outputs"]["plot"]}')
    return 0


if __name__ == '__main__':
    os.environ.setdefault('PYTHONUNBUFFERED', '1')
    sys.exit(main())
