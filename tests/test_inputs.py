"""Bad input gets a clear error that names the file, row and lengths: texts beyond the model's context,
files that are not UTF-8."""

import json

import pytest

from steerlens import collect_activations, generate
from steerlens.harness import evaluate
from steerlens.truthfulqa import load_truthfulqa

LONG = " ".join(["word"] * 200)  # beyond the tiny model's 128 positions


@pytest.mark.integration  # the tiny model with the default model's tokenizer
class TestLongInputs:
    def test_generate_names_the_prompt_and_lengths(self, tiny_chat):
        with pytest.raises(ValueError, match=r"Prompt 2 is \d+ tokens long \+ 4 new tokens = \d+, beyond the "
                                             r"model's context of 128 tokens"):
            generate(tiny_chat, ["hi", LONG], max_new_tokens=4, chat=False)
        generate(tiny_chat, ["hi " * 60], max_new_tokens=4, chat=False)  # fits: no error

    def test_collect_activations_names_the_text(self, tiny_chat):
        with pytest.raises(ValueError, match="Text 3 is .* beyond the model's context of 128"):
            collect_activations(tiny_chat, ["a", "b", LONG], layers=[1], progress=False)

    def test_eval_names_the_file_row_before_fitting(self, tiny_chat, tmp_path, monkeypatch):
        monkeypatch.setenv("STEERLENS_CACHE", str(tmp_path / "cache"))
        path = tmp_path / "p.jsonl"
        path.write_text(json.dumps({"prefix": "Hello"}) + "\n" + json.dumps({"prompt": LONG}) + "\n")
        with pytest.raises(ValueError, match=r"p\.jsonl: row 2 is \d+ tokens long \+ 8 new tokens"):
            evaluate(tiny_chat, "actadd", "detox", path, max_new_tokens=8, progress=False)
        assert not (tmp_path / "cache").exists()  # refused before anything was fitted


def test_non_utf8_files_are_named(tmp_path):
    from steerlens.data import read_jsonl

    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes('{"prompt": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.jsonl: not UTF-8"):
        read_jsonl(bad)
    csv = tmp_path / "q.csv"
    csv.write_bytes("Question,Best Answer,Correct Answers,Incorrect Answers\nCaf\xe9?,a,a,b\n".encode("latin-1"))
    with pytest.raises(ValueError, match="q.csv: not UTF-8"):
        load_truthfulqa(csv)
