"""A shareable package: dtypes and devices, the weights fingerprint, strength at apply time, llama.cpp
control-vector export, refusing foreign editor files, shipped data found through the package."""

import json

import pytest
import torch
from safetensors.torch import save_file

from steerlens.editing import Editor, ModelSpec
from steerlens.methods.baselines import ActAdd, OrthoProj
from steerlens.methods.pace import ConceptDictionary, PaCEEditor
from steerlens.methods.recontrol import MLPValue, ValueController
from steerlens.methods.sea import SpectralEditor
from steerlens.models import resolve_dtype, tiny_model


def actadd(model, layers=(1,), alpha=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    tensors = {f"vector.{la}": torch.randn(model.cfg.d_model, generator=g) for la in layers}
    return ActAdd(model=ModelSpec.of(model), layers=list(layers), settings={"alpha": alpha, "position": "mean"},
                  tensors=tensors)


def every_editor(model):
    """One fitted-looking editor of each hooked method, built from random tensors (float32)."""
    d, spec = model.cfg.d_model, ModelSpec.of(model)
    g = torch.Generator().manual_seed(1)
    ortho = OrthoProj(model=spec, layers=[1], settings={"position": "mean"},
                      tensors={"basis.1": torch.linalg.qr(torch.randn(d, 2, generator=g))[0]})
    q = torch.linalg.qr(torch.randn(d, d, generator=g))[0]
    sea = SpectralEditor(model=spec, layers=[1], settings={"feature_map": "linear"},
                         tensors={"u_pos.1": q[:, :20].contiguous(), "u_neg.1": q[:, 28:].contiguous(),
                                  "phi_scale.1": torch.ones(d)})
    atoms = torch.randn(12, d, generator=g)
    dic = ConceptDictionary([f"c{i}" for i in range(12)], {1: atoms}, spec)
    dic.set_partition("t", [0, 3])
    pace = PaCEEditor.from_dictionary(dic, "t", layers=[1])
    torch.manual_seed(0)
    rec = ValueController.from_value(model, MLPValue(d, hidden=16, n_layers=2), alpha=0.5, n_steps=3)
    return {"actadd": actadd(model), "orthoproj": ortho, "sea": sea, "pace": pace, "recontrol": rec}


class TestDtypes:
    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    def test_float32_editors_steer_half_precision_models(self, dtype):
        tokens = torch.randint(0, 101, (2, 6))
        ref_model, half = tiny_model(n_layers=3), tiny_model(n_layers=3, dtype=dtype)
        assert half.W_E.dtype == dtype
        for name, editor in every_editor(ref_model).items():
            seen: dict[str, list] = {"unsteered": [], "steered": []}

            def record(key, seen=seen):
                return lambda act, hook: seen[key].append((act.dtype, act.device, act.shape))

            hooks = editor.fwd_hooks()
            base = half.run_with_hooks(tokens, fwd_hooks=[(n, record("unsteered")) for n, _ in hooks])
            # the recorder runs after the editor's hook: it sees what the editor returned
            steered = half.run_with_hooks(tokens, fwd_hooks=hooks + [(n, record("steered")) for n, _ in hooks])
            assert steered.dtype == dtype and torch.isfinite(steered.float()).all(), name
            assert seen["steered"] == seen["unsteered"], name  # same dtype, device and shape as unedited
            assert not torch.equal(base, steered), f"{name} changed nothing in {dtype}"
            # and close to the float32 model steered by the same editor
            want = ref_model.run_with_hooks(tokens, fwd_hooks=editor.fwd_hooks()).softmax(-1)
            got = steered.float().softmax(-1)
            assert (want - got).abs().max() < 0.05, name

    def test_resolve_dtype(self):
        assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype("float16") is torch.float16
        with pytest.raises(ValueError, match="floating-point"):
            resolve_dtype("int8")


class TestDevices:
    def test_hooks_return_on_the_activations_device_and_dtype(self, tiny):
        """The editor's tensors stay on the CPU; activations on another device (``meta``: shapes only, no
        data, the one other device every machine has) come back on that device, in their dtype."""
        for name, editor in every_editor(tiny).items():
            if name in ("pace", "recontrol"):  # iterative solvers read values; checked on CPU above
                continue
            for dtype in (torch.float32, torch.bfloat16):
                act = torch.empty(2, 5, tiny.cfg.d_model, device="meta", dtype=dtype)
                (_, fn), = editor.fwd_hooks()
                out = fn(act, None)
                assert out.device.type == "meta" and out.dtype == dtype and out.shape == act.shape, name
            assert all(v.device.type == "cpu" for v in editor.tensors.values())


class TestFingerprint:
    def test_same_shape_other_weights_is_refused_unless_not_strict(self, tiny, tmp_path):
        other = tiny_model(n_layers=3, d_model=32, d_vocab=101, seed=1)
        editor = actadd(tiny)
        assert editor.model.fingerprint is not None
        with pytest.raises(ValueError, match="different weights"), editor.apply(other):
            pass
        with pytest.warns(UserWarning, match="strict=False"), editor.apply(other, strict=False):
            pass
        editor.save(tmp_path / "e")
        with pytest.raises(ValueError, match="different weights"):
            Editor.load(tmp_path / "e", model=other)
        with pytest.warns(UserWarning):
            Editor.load(tmp_path / "e", model=other, strict=False)

    def test_same_model_in_another_dtype_passes(self, tiny):
        editor = actadd(tiny)
        with editor.apply(tiny_model(n_layers=3, d_model=32, d_vocab=101, seed=0, dtype=torch.bfloat16)):
            pass

    def test_files_without_fingerprint_still_load(self, tiny, tmp_path):
        actadd(tiny).save(tmp_path / "e")
        meta = json.loads((tmp_path / "e" / "editor.json").read_text())
        del meta["model"]["fingerprint"]
        (tmp_path / "e" / "editor.json").write_text(json.dumps(meta))
        assert Editor.load(tmp_path / "e", model=tiny).model.fingerprint is None


class TestStrength:
    def test_zero_is_identity_one_is_fitted_half_is_between(self, tiny):
        tokens = torch.randint(0, 101, (2, 6))
        for name, editor in every_editor(tiny).items():
            (hook, fn1), = editor.fwd_hooks(1.0)
            (_, fn0), = editor.fwd_hooks(0.0)
            (_, fnh), = editor.fwd_hooks(0.5)
            _, cache = tiny.run_with_cache(tokens, names_filter=hook)
            act = cache[hook]
            torch.testing.assert_close(fn0(act, None), act)
            full = fn1(act, None)
            assert not torch.allclose(full, act), name
            torch.testing.assert_close(fnh(act, None), act + 0.5 * (full - act), atol=1e-5, rtol=1e-5)
        with every_editor(tiny)["actadd"].apply(tiny, strength=0.0):
            torch.testing.assert_close(tiny(tokens), tiny.run_with_hooks(tokens, fwd_hooks=[]))

    def test_bad_strength_is_refused(self, tiny):
        with pytest.raises(ValueError, match="finite"):
            actadd(tiny).fwd_hooks(float("nan"))


class TestControlVectorExport:
    def test_round_trip_through_the_gguf_reader(self, tiny, tmp_path):
        import gguf

        editor = actadd(tiny, layers=(1, 2), alpha=0.4)
        path = editor.export_gguf(tmp_path / "cv.gguf")
        reader = gguf.GGUFReader(str(path))
        arch = reader.fields["general.architecture"]
        assert bytes(arch.parts[arch.data[0]]).decode() == "controlvector"
        count = reader.fields["controlvector.layer_count"]
        assert int(count.parts[count.data[0]][0]) == 2
        tensors = {t.name: torch.from_numpy(t.data.copy()) for t in reader.tensors}
        assert sorted(tensors) == ["direction.1", "direction.2"]  # steerlens layer L -> llama.cpp direction.L
        for layer in (1, 2):
            torch.testing.assert_close(tensors[f"direction.{layer}"].reshape(-1),
                                       0.4 * editor.tensors[f"vector.{layer}"])

    def test_layer_zero_and_non_vector_editors_are_refused(self, tiny, tmp_path):
        with pytest.raises(ValueError, match="layer 0"):
            actadd(tiny, layers=(0,)).export_gguf(tmp_path / "a.gguf")
        with pytest.raises(NotImplementedError, match="not one vector"):
            every_editor(tiny)["orthoproj"].export_gguf(tmp_path / "b.gguf")


class TestForeignEditorFiles:
    @pytest.fixture
    def saved(self, tiny, tmp_path):
        return actadd(tiny).save(tmp_path / "e")

    def _edit_json(self, path, fn):
        meta = json.loads((path / "editor.json").read_text())
        fn(meta)
        (path / "editor.json").write_text(json.dumps(meta))

    @pytest.mark.parametrize("change, message", [
        (lambda m: m.update(method="evil"), "method 'evil'"),
        (lambda m: m.update(format_version=99), "newer steerlens"),
        (lambda m: m.update(layers=[1, 7]), "layers must be"),
        (lambda m: m["model"].update(d_model="32"), "positive integers"),
        (lambda m: m.update(settings=[]), "settings"),
    ])
    def test_bad_json_is_refused(self, saved, change, message):
        self._edit_json(saved, change)
        with pytest.raises(ValueError, match=message):
            Editor.load(saved)

    def test_truncated_json(self, saved):
        (saved / "editor.json").write_text('{"method": "actadd", ')
        with pytest.raises(ValueError, match="not valid JSON"):
            Editor.load(saved)

    def test_truncated_tensors(self, saved):
        data = (saved / "tensors.safetensors").read_bytes()
        (saved / "tensors.safetensors").write_bytes(data[: len(data) // 2])
        with pytest.raises(ValueError, match="not a readable safetensors"):
            Editor.load(saved)

    @pytest.mark.parametrize("tensors, message", [
        ({"vector.3": torch.zeros(32)}, "not among the editor's layers"),
        ({"vector.1": torch.zeros(31)}, "d_model=32"),
        ({"vector.1": torch.zeros(32, dtype=torch.int64)}, "dtype"),
        ({"vector.1": torch.full((32,), float("nan"))}, "NaN"),
    ])
    def test_renamed_reshaped_wrong_dtype_or_nan_tensors(self, saved, tensors, message):
        save_file(tensors, str(saved / "tensors.safetensors"))
        with pytest.raises(ValueError, match=message):
            Editor.load(saved)

    def test_interrupted_save_leaves_nothing_trusted(self, tiny, tmp_path, monkeypatch):
        import steerlens.editing as editing

        def boom(*a, **k):
            raise KeyboardInterrupt

        monkeypatch.setattr(editing, "save_file", boom)
        with pytest.raises(KeyboardInterrupt):
            actadd(tiny).save(tmp_path / "e")
        assert not (tmp_path / "e" / "editor.json").exists()
        assert list((tmp_path / "e").iterdir()) == []
        with pytest.raises(FileNotFoundError):
            Editor.load(tmp_path / "e")


def test_shipped_data_is_found_through_the_package():
    from steerlens.data import data_dir, facts_path, truthfulqa_dev_path

    assert truthfulqa_dev_path().is_file() and facts_path().is_file()
    assert (data_dir() / "pairs" / "sentiment.jsonl").is_file()


def test_every_data_folder_ships_in_the_wheel():
    """pyproject lists data/'s subfolders as packages (mapped to steerlens._data.*): a new folder must be added."""
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    root = Path(__file__).resolve().parents[1]
    setup = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {p.name for p in (root / "data").iterdir() if p.is_dir()}
    listed = {p.split(".")[2] for p in setup["packages"] if p.startswith("steerlens._data.")}
    assert folders == listed
    assert all(f"steerlens._data.{f}" in setup["package-data"] for f in folders)
