"""Tables, plot and docs blocks of a study, from its rows (never typed by hand)."""
import math
import os
import os.path as osp
import re
from typing import Dict, List, Mapping, Optional, Sequence

from .aggregate import SIGNIFICANCE_RULE, Row

DOC_BLOCK = re.compile(r'(<!-- study:(?P<name>[\w-]+) -->\n)(?P<body>.*?)'
                       r'(<!-- /study:(?P=name) -->)', re.S)


def pareto_front(points: Sequence[tuple]) -> List[int]:
    """Indices of the points no other point beats: none has at most as many parameters and a
    higher metric (or fewer parameters and the same metric).

    Args:
        points: ``(params, metric)`` pairs.

    Returns:
        The indices on the front, by increasing parameters.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _decimals(rows: Sequence[Row]) -> int:
    """COCO mAP is a fraction, accuracy and mIoU are percentages."""
    return 3 if all(abs(r.mean) <= 1.0 for r in rows if not math.isnan(r.mean)) else 1


def _count(n: float) -> str:
    if n >= 1e6:
        return f'{n / 1e6:.2f} M'
    if n >= 1e3:
        return f'{n / 1e3:.1f} k'
    return f'{n:.0f}'


def task_table(rows: Sequence[Row], task: str, seeds: Sequence[int],
               methods: Optional[Sequence[str]] = None) -> str:
    """The markdown table of one task: a row per (backbone, method).

    Args:
        rows: Rows of every task (only ``task``'s are used).
        task: The task.
        seeds: The study's seeds (rows with fewer are marked).
        methods: Row order (default: as given).
    """
    mine = [r for r in rows if r.task == task]
    if not mine:
        return f'_{task}: no finished runs yet._\n'
    if methods:
        rank = {m: i for i, m in enumerate(methods)}
        mine.sort(key=lambda r: (r.backbone, rank.get(r.method, len(rank))))
    d = _decimals(mine)
    metric = mine[0].metric
    lines = [f'| backbone | method | {metric} (test) | Δ vs full | trainable backbone | '
             'trainable model | s/iter | memory (MB) | lr |',
             '|---|---|---:|---:|---:|---:|---:|---:|---:|']
    for r in mine:
        std = '' if math.isnan(r.std) else f' ± {r.std:.{d}f}'
        n = f' (n={r.n})' + ('' if r.n >= len(seeds) else ' †')
        if r.delta is None:
            delta = '' if r.method == 'full' else '–'
        else:
            delta = f'{r.delta:+.{d}f}' + ('*' if r.significant else '')
        lines.append(
            f'| {r.backbone} | {r.method} | {r.mean:.{d}f}{std}{n} | {delta} | '
            f'{r.backbone_pct:.2f} % | {_count(r.params.get("trainable", 0))} '
            f'({r.model_pct:.1f} %) | {r.s_per_iter:.3f} | {r.memory_mb:.1f} | {r.lr:.2g} |')
    kinds = sorted({r.memory_kind for r in mine})
    legend = (f'Mean ± sample std over seeds of the test split, at the lr chosen on the '
              f'validation split (seed {seeds[0]}). `*`: significant, {SIGNIFICANCE_RULE}. '
              f'†: fewer seeds than the study\'s {len(seeds)}. Trainable parameters after '
              f'training (MiMi: after pruning). Memory: {"; ".join(kinds)}.')
    return '\n'.join(lines) + '\n\n' + legend + '\n'


def tables_markdown(rows: Sequence[Row], study: Mapping) -> str:
    """Every task's table under a heading.

    Args:
        rows: From :func:`~.aggregate.summarize`.
        study: The study summary (``tasks``, ``seeds``, ``methods``).
    """
    parts = []
    for task, tcfg in study['tasks'].items():
        parts.append(f'#### {task} ({tcfg["metric"]})\n\n'
                     + task_table(rows, task, study['seeds'], study.get('methods')))
    return '\n'.join(parts)


def headline_table(rows: Sequence[Row], study: Mapping) -> str:
    """One compact table of the whole study: a row per method, a column per (backbone, task)
    with the test metric's mean ± std over seeds (``*``: significantly different from full),
    and the share of each backbone the method trains.

    Args:
        rows: From :func:`~.aggregate.summarize`.
        study: The study summary (``backbones``, ``tasks``, ``methods``, ``seeds``).
    """
    if not rows:
        return '_No finished runs yet._\n'
    cells = [(b, t) for b in study['backbones'] for t in study['tasks']
             if any(r.backbone == b and r.task == t for r in rows)]
    by_key = {(r.backbone, r.task, r.method): r for r in rows}
    decimals = {(b, t): _decimals([r for r in rows if r.backbone == b and r.task == t])
                for b, t in cells}
    backbones = [b for b in study['backbones'] if any(r.backbone == b for r in rows)]
    head = ['method'] + [f'{b} {t}' for b, t in cells] + \
        [f'trained ({b})' for b in backbones]
    lines = ['| ' + ' | '.join(head) + ' |', '|---' + '|---:' * (len(head) - 1) + '|']
    methods = list(study.get('methods') or sorted({r.method for r in rows}))
    for m in methods:
        if not any(r.method == m for r in rows):
            continue
        out = [m]
        for b, t in cells:
            r = by_key.get((b, t, m))
            if r is None:
                out.append('')
                continue
            d = decimals[(b, t)]
            std = '' if math.isnan(r.std) else f' ± {r.std:.{d}f}'
            out.append(f'{r.mean:.{d}f}{std}' + ('*' if r.significant else '')
                       + ('' if r.n >= len(study['seeds']) else ' †'))
        for b in backbones:
            pct = [r.backbone_pct for r in rows if r.backbone == b and r.method == m]
            out.append(f'{pct[0]:.2f} %' if pct else '')
        lines.append('| ' + ' | '.join(out) + ' |')
    metrics = ', '.join(f'{t}: {c["metric"]}' for t, c in study['tasks'].items())
    return ('\n'.join(lines) + f'\n\nTest metric ({metrics}), mean ± sample std over '
            f'{len(study["seeds"])} seeds at the lr chosen on validation; `*`: differs from '
            f'full by more than two standard errors; †: fewer seeds. "trained": share of the '
            'backbone the method trains (after MiMi\'s pruning).\n')


def plot(rows: Sequence[Row], path: str, study: Mapping) -> str:
    """Metric vs trainable parameters (whole model, log x), one panel per task, error bars
    of the seeds' std, the Pareto front of each backbone marked.

    Args:
        rows: From :func:`~.aggregate.summarize`.
        path: The image file to write (its folder is created).
        study: The study summary (``tasks``, ``backbones``).

    Returns:
        ``path``.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    tasks = list(study['tasks'])
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4.4), squeeze=False)
    colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for ax, task in zip(axes[0], tasks):
        for b, backbone in enumerate(study['backbones']):
            mine = [r for r in rows if r.task == task and r.backbone == backbone]
            if not mine:
                continue
            colour = colours[b % len(colours)]
            xs = [max(r.params.get('trainable', 1), 1) for r in mine]
            ys = [r.mean for r in mine]
            errs = [0 if math.isnan(r.std) else r.std for r in mine]
            ax.errorbar(xs, ys, yerr=errs, fmt='o', ms=4, color=colour, capsize=2,
                        label=backbone)
            for x, y, r in zip(xs, ys, mine):
                ax.annotate(r.method, (x, y), textcoords='offset points', xytext=(3, 3),
                            fontsize=6, color=colour)
            front = pareto_front(list(zip(xs, ys)))
            fx, fy = [xs[i] for i in front], [ys[i] for i in front]
            ax.step(fx, fy, where='post', ls='--', lw=1, color=colour, alpha=0.7)
            ax.scatter(fx, fy, s=90, facecolors='none', edgecolors=colour, lw=1)
        if any(r.task == task for r in rows):
            ax.set_xscale('log')
        else:
            ax.text(0.5, 0.5, 'no finished cells yet', ha='center', va='center',
                    transform=ax.transAxes)
        ax.set_xlabel('trainable parameters (whole model)')
        ax.set_ylabel(f'{study["tasks"][task]["metric"]} (test)')
        ax.set_title(task)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, title='circled, dashed: Pareto front', title_fontsize=7)
    fig.suptitle(f'PEFT study "{study.get("name", "")}": mean ± std over seeds at the '
                 'lr chosen on validation', fontsize=9)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def update_docs(md_path: str, blocks: Mapping[str, str], only_present: bool = False
                ) -> List[str]:
    """Replace the bodies of ``<!-- study:NAME -->`` ... ``<!-- /study:NAME -->`` blocks.

    Args:
        md_path: The markdown file (e.g. ``docs/study.md``).
        blocks: ``{NAME: new body}``.
        only_present: Fill the blocks the file has (at least one), not all of ``blocks``.

    Returns:
        The names whose body changed.

    Raises:
        ValueError: If a named block is not in the file.
    """
    with open(md_path) as f:
        text = f.read()
    found = {m.group('name') for m in DOC_BLOCK.finditer(text)}
    missing = sorted(set(blocks) - found)
    if only_present and set(blocks) & found:
        missing = []
    if missing:
        raise ValueError(f'{md_path} has no block(s) {missing}: add "<!-- study:NAME -->" and '
                         f'"<!-- /study:NAME -->" lines around where each goes; it has '
                         f'{sorted(found)}')
    changed = []

    def repl(m: re.Match) -> str:
        name = m.group('name')
        if name not in blocks:
            return m.group(0)
        body = blocks[name].rstrip('\n') + '\n'
        if body != m.group('body'):
            changed.append(name)
        return m.group(1) + body + m.group(4)

    new = DOC_BLOCK.sub(repl, text)
    if new != text:
        with open(md_path, 'w') as f:
            f.write(new)
    return changed


def docs_blocks(rows: Sequence[Row], study: Mapping, plot_rel: str, runs: int,
                json_rel: str) -> Dict[str, str]:
    """The generated blocks of ``docs/study.md``: ``results`` (tables), ``figure`` and
    ``headline`` (:func:`headline_table`, also the README's).

    Args:
        rows: From :func:`~.aggregate.summarize`.
        study: The study summary.
        plot_rel: The plot's path relative to the markdown file.
        runs: Number of run records behind the rows.
        json_rel: The merged JSON's path from the repository root (for the caption).
    """
    head = (f'Generated from `{json_rel}` ({runs} runs) by '
            '`tools/analysis_tools/peft_study.py --from-json`; do not edit.\n\n')
    return dict(results=head + tables_markdown(rows, study),
                figure=f'![metric vs trainable parameters]({plot_rel})\n',
                headline=head + headline_table(rows, study))
