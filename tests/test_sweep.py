"""steerlens sweep: parsing, the statistics, and a sweep on a tiny model whose zero setting is the identity."""

import json

import numpy as np
import pytest

from steerlens.cli import main
from steerlens.stats import paired_interval, perplexity_ratio_interval
from steerlens.sweep import format_table, parse_sweep, run_sweep


def test_parse_sweep():
    assert parse_sweep("alpha=0.05,0.1") == ("alpha", [0.05, 0.1])
    assert parse_sweep("layers=[9],[15, 18]") == ("layers", [[9], [15, 18]])
    assert parse_sweep("positions=prompt,all") == ("positions", ["prompt", "all"])
    for bad in ("alpha", "=1,2", "alpha=", "alpha=1,,2"):
        with pytest.raises(ValueError, match="--sweep"):
            parse_sweep(bad)


def test_perplexity_ratio_of_known_runs():
    # base: 2 nats over 2 tokens per prompt (perplexity e); steered: 3 nats over 2 tokens (e^1.5)
    ratio, low, high = perplexity_ratio_interval([2.0, 2.0, 2.0], [2, 2, 2], [3.0, 3.0, 3.0], [2, 2, 2])
    assert ratio == pytest.approx(np.exp(0.5)) and low == pytest.approx(ratio) and high == pytest.approx(ratio)
    ratio, low, high = perplexity_ratio_interval([1.0, 4.0, 2.0, 3.0], [2, 2, 2, 2], [1.0, 8.0, 2.0, 3.0],
                                                 [2, 2, 2, 2])
    assert ratio == pytest.approx(np.exp(14 / 8 - 10 / 8)) and low <= ratio <= high and high > low
    with pytest.raises(ValueError, match="at least two"):
        perplexity_ratio_interval([1.0], [1], [1.0], [1])


def test_paired_interval_of_no_change_is_a_point():
    assert paired_interval([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], statistic="difference") == (0.0, 0.0)
    lo, hi = paired_interval([0.1, 0.2, 0.3, 0.4], [0.2, 0.25, 0.5, 0.45], statistic="difference")
    assert lo < 0.1 < hi


def test_sweep_on_a_tiny_model(tiny_chat, tmp_path):
    rows = [{"prompt": "Tell me about rain."}, {"prefix": "The bus was late again, and"}]
    result = run_sweep(tiny_chat, "actadd", "sentiment", rows, "alpha", [0.0, 5.0], {"layers": [1]},
                       max_new_tokens=4, out=tmp_path, progress=False)
    zero, big = result["rows"]
    # strength 0 adds nothing: the same generations, no change, perplexity ratio exactly 1
    assert zero["scores"]["generations"] == result["unsteered"]["scores"]["generations"]
    assert zero["change"] == 0.0 and zero["perplexity_ratio"] == pytest.approx(1.0)
    assert big["scores"]["generations"] != result["unsteered"]["scores"]["generations"]
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert [r["value"] for r in saved["rows"]] == [0.0, 5.0]
    assert (tmp_path / "frontier.png").stat().st_size > 0
    assert "| 5.0 |" in (tmp_path / "table.md").read_text() and "| 5.0 |" in format_table(result)
    with pytest.raises(ValueError, match="no text metric"):
        run_sweep(tiny_chat, "actadd", "truthfulqa", rows, "alpha", [0.1])
    with pytest.raises(ValueError, match="unknown setting"):
        run_sweep(tiny_chat, "actadd", "sentiment", rows, "alpah", [0.1])


def test_the_control_of_a_zero_edit_is_zero_and_of_a_push_differs(tiny_chat, tmp_path):
    rows = [{"prompt": "Tell me about rain."}, {"prefix": "The bus was late again, and"}]
    result = run_sweep(tiny_chat, "actadd", "sentiment", rows, "alpha", [0.0, 5.0], {"layers": [1]},
                       max_new_tokens=4, out=tmp_path, progress=False, control=True)
    zero, big = result["rows"]
    base = result["unsteered"]["scores"]["generations"]
    # a zero edit has size zero, so its equal-size control is the identity too
    assert zero["control"]["scores"]["generations"] == base and zero["control"]["change"] == 0.0
    # a large push in another direction generates something else than the push itself
    assert big["control"]["scores"]["generations"] != big["scores"]["generations"]
    assert result["control"] == {"kind": "random-direction", "seed": 0}
    assert "5.0, random direction of equal size" in (tmp_path / "table.md").read_text()


def test_cli_refuses_bad_sweeps_before_loading_a_model(tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    assert main(["sweep", "--method", "actadd", "--task", "sentiment", "--prompts", str(prompts),
                 "--sweep", "alpah=1,2"]) == 2
    assert "unknown setting" in capsys.readouterr().err
    assert main(["sweep", "--method", "actadd", "--task", "sentiment", "--prompts", str(prompts),
                 "--sweep", "alpha"]) == 2
    assert "--sweep expects" in capsys.readouterr().err


def test_run_methods_scores_each_method_against_the_same_unsteered_run(tiny_chat, tmp_path):
    from steerlens.sweep import run_methods

    rows = [{"prompt": "Tell me about rain."}, {"prefix": "The bus was late again, and"}]
    result = run_methods(tiny_chat, ["none", "prompt", "actadd"], "sentiment", rows, max_new_tokens=4, out=tmp_path,
                         progress=False)
    none, prompt, _ = result["rows"]
    assert [r["value"] for r in result["rows"]] == ["none", "prompt", "actadd"] and result["key"] == "method"
    assert none["change"] == 0.0 and none["perplexity_ratio"] == pytest.approx(1.0)  # the identity editor
    # the prompting baseline generates under its system prompt, so its text differs from the unsteered run's
    assert prompt["scores"]["generations"] != result["unsteered"]["scores"]["generations"]
    assert "| \"actadd\" |" in (tmp_path / "table.md").read_text()
    with pytest.raises(ValueError, match="Unknown method"):
        run_methods(tiny_chat, ["nope"], "sentiment", rows)
