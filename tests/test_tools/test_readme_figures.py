"""README figures are command outputs: the quick ones are re-run and must match."""
import os.path as osp
import sys

from tests.conftest import ROOT

sys.path.insert(0, osp.join(ROOT, 'tools', 'misc'))
import readme_figures  # noqa: E402

sys.path.pop(0)


def test_every_figure_block_parses():
    with open(readme_figures.README) as f:
        found = readme_figures.figures(f.read())
    assert set(found) == set(readme_figures.FIGURES)
    for name, match in found.items():
        assert match.group('cmd').strip() and match.group('out').strip(), name


def test_quick_figures_are_current(capsys):
    status = readme_figures.main([])
    out = capsys.readouterr().out
    assert status == 0, out
    assert 'count-trainable: up to date' in out and 'optimizer-groups: up to date' in out


def test_a_changed_output_is_reported(tmp_path, monkeypatch, capsys):
    with open(readme_figures.README) as f:
        text = f.read()
    stale = text.replace('|    3,667,456 |', '|    3,667,457 |')
    assert stale != text
    copy = tmp_path / 'README.md'
    copy.write_text(stale)
    monkeypatch.setattr(readme_figures, 'README', str(copy))
    assert readme_figures.main(['count-trainable']) == 1
    assert 'count-trainable: changed' in capsys.readouterr().out
    assert readme_figures.main(['count-trainable', '--update']) == 0
    assert copy.read_text() == text
