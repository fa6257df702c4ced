"""Property tests (hypothesis): the input parsers round-trip what they accept and refuse what they should;
the maths keeps its invariants on random inputs."""

import csv
import io
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steerlens.cli import parse_settings
from steerlens.data import read_jsonl
from steerlens.methods.baselines import orthonormal_basis, project_out
from steerlens.methods.recontrol import td_targets
from steerlens.solvers import elastic_net, kkt_violation
from steerlens.truthfulqa import load_truthfulqa

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
text = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=40)
json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False,
                           allow_infinity=False) | text, lambda c: st.lists(c, max_size=3), max_leaves=6)


class TestParsers:
    @FAST
    @given(rows=st.lists(st.dictionaries(text, json_values, min_size=1, max_size=4), min_size=1, max_size=6))
    def test_jsonl_round_trip(self, tmp_path_factory, rows):
        path = tmp_path_factory.mktemp("j") / "rows.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
        assert read_jsonl(path) == rows

    @FAST
    @given(junk=st.text(min_size=1, max_size=30).filter(lambda s: s.strip() and "\n" not in s))
    def test_jsonl_refuses_non_objects_naming_the_line(self, tmp_path_factory, junk):
        try:
            value = json.loads(junk)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return
        path = tmp_path_factory.mktemp("j") / "bad.jsonl"
        path.write_text('{"prompt": "ok"}\n' + junk + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
            read_jsonl(path)

    @FAST
    @given(key=st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True), value=json_values)
    def test_set_values_round_trip_as_json(self, key, value):
        assert parse_settings([f"{key}={json.dumps(value)}"]) == {key: value}

    @FAST
    @given(key=st.from_regex(r"[a-z_]{1,8}", fullmatch=True), word=st.from_regex(r"[a-z]{1,12}", fullmatch=True))
    def test_set_plain_words_stay_strings(self, key, word):
        expected = json.loads(word) if word in ("true", "false", "null") else word
        assert parse_settings([f"{key}={word}"]) == {key: expected}

    @FAST
    @given(item=st.text(max_size=20).filter(lambda s: "=" not in s or not s.partition("=")[0].strip()))
    def test_set_without_a_key_is_refused(self, item):
        with pytest.raises(ValueError, match="KEY=VALUE"):
            parse_settings([item])

    @FAST
    @given(q=text.filter(str.strip), best=text.filter(lambda s: s.strip() and ";" not in s),
           wrong=st.lists(text.filter(lambda s: s.strip() and ";" not in s), min_size=1, max_size=4))
    def test_truthfulqa_csv_round_trip(self, tmp_path_factory, q, best, wrong):
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["Question", "Best Answer", "Correct Answers", "Incorrect Answers"])
        w.writerow([q, best, best, "; ".join(wrong)])
        path = tmp_path_factory.mktemp("q") / "q.csv"
        path.write_text(buf.getvalue(), encoding="utf-8", newline="")
        (row,) = load_truthfulqa(path)
        assert row["question"] == q.strip() and row["best"] == best.strip()
        assert row["incorrect"] == [x.strip() for x in wrong]


def random_matrix(seed, rows, cols):
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class TestMaths:
    @FAST
    @given(seed=st.integers(0, 10**6), d=st.integers(2, 16), k=st.integers(1, 4))
    def test_projection_out_is_idempotent_and_orthogonal(self, seed, d, k):
        basis = orthonormal_basis(random_matrix(seed, k, d).float())  # float32, as editors store it
        h = random_matrix(seed + 1, 5, d).float()
        once = project_out(h, basis)
        scale = float(h.norm(dim=-1).max())
        torch.testing.assert_close(project_out(once, basis), once, atol=1e-6 * scale, rtol=0)
        torch.testing.assert_close(once @ basis, torch.zeros(5, basis.shape[1]), atol=1e-6 * scale, rtol=0)

    @FAST
    @given(seed=st.integers(0, 10**6), d=st.integers(3, 12), k=st.integers(1, 10),
           alpha=st.floats(0.001, 0.3), l1_ratio=st.floats(0.1, 1.0))
    def test_elastic_net_meets_its_kkt_conditions(self, seed, d, k, alpha, l1_ratio):
        D = random_matrix(seed, d, k).float()
        D = D / D.norm(dim=0, keepdim=True)
        Y = random_matrix(seed + 1, 4, d).float()
        C = elastic_net(D, Y, alpha, l1_ratio, tol=1e-6)
        scale = (Y @ D).abs().max()
        assert float(kkt_violation(D, Y, C, alpha, l1_ratio).max()) <= 1e-4 * float(scale) + 1e-5

    @FAST
    @given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=5), seed=st.integers(0, 10**6))
    def test_td_targets_on_padded_episodes(self, lengths, seed):
        width = max(lengths)
        values = random_matrix(seed, len(lengths), width).float()
        rewards = random_matrix(seed + 1, 1, len(lengths))[0].float()
        mask = torch.tensor([[t < n for t in range(width)] for n in lengths])
        target = td_targets(values, mask, rewards)
        for b, n in enumerate(lengths):
            for t in range(width):
                if t >= n:
                    assert target[b, t] == 0  # padding carries no target
                elif t == n - 1:
                    assert target[b, t] == rewards[b]  # the reward at the last real step
                else:
                    assert target[b, t] == values[b, t + 1]  # bootstrap from the next state
        assert not target.requires_grad


def test_jsonl_keeps_line_separators_inside_strings(tmp_path):
    """Found by the property test: str.splitlines() broke a line at U+2028 / \\x1e inside a JSON string."""
    rows = [{"prompt": "one\u2028two"}, {"prompt": "a\x1eb\x85c"}]
    path = tmp_path / "sep.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\r\n", encoding="utf-8")
    assert read_jsonl(path) == rows
