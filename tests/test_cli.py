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


@pytest.mark.integration
def test_eval_refuses_a_prompt_beyond_the_context(tmp_path, capsys):
    """9,000 words crashed with a raw IndexError (exit 1); now exit 2 naming the file, the row and the lengths."""
    import json

    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"prompt": "Hi."}) + "\n" + json.dumps({"prefix": "word " * 9000}) + "\n")
    assert main(["eval", "--method", "none", "--task", "detox", "--prompts", str(path)]) == 2
    err = capsys.readouterr().err
    assert "long.jsonl: row 2 is" in err and "beyond the model's context of 8192 tokens" in err


def test_data_paths_name_the_shipped_copy_from_any_folder(tmp_path, monkeypatch):
    """The README's `--prompts data/detox/eval.jsonl` works outside a checkout (a wheel install): a missing
    data/... path names the file shipped in the package; a local file of that name wins; anything else is
    passed on unchanged (and then refused with its name)."""
    from pathlib import Path

    from steerlens.cli import item_file
    from steerlens.data import data_dir

    monkeypatch.chdir(tmp_path)
    assert Path(item_file("data/detox/eval.jsonl")) == data_dir() / "detox" / "eval.jsonl"
    assert item_file("data/detox/no_such.jsonl") == "data/detox/no_such.jsonl"
    assert item_file("mine.jsonl") == "mine.jsonl"
    (tmp_path / "data" / "detox").mkdir(parents=True)
    (tmp_path / "data" / "detox" / "eval.jsonl").write_text('{"prompt": "hi"}\n')
    assert item_file("data/detox/eval.jsonl") == "data/detox/eval.jsonl"
