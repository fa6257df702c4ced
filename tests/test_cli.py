"""The steerlens command line: the demo (the README's main job) runs end to end."""

import pytest

from steerlens.cli import main


def test_unknown_command_exits_nonzero(capsys):
    with pytest.raises(SystemExit) as e:
        main(["nonsense"])
    assert e.value.code != 0


@pytest.mark.integration
def test_demo_runs_every_method(capsys):
    assert main(["demo", "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr().out
    for label in ("unsteered", "prompt", "actadd", "orthoproj", "sea"):
        assert f"  {label}" in out
