"""Shared fixtures: a random-init tiny Llama with a char-level chat tokenizer (no files), and the embedded model."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def require_browser() -> None:
    """Skip (or, with ``CI`` set, fail) a browser test when chromium, chromedriver or selenium is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.exists(p) or shutil.which(os.path.basename(p)))]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        msg = f"browser test needs {', '.join(missing)} (run `make test`, which installs them)"
        if os.environ.get("CI"):
            pytest.fail(msg + " — CI is set, so this must run")
        pytest.skip(msg)


def make_tiny_tokenizer():
    """A character-level fast tokenizer with ChatML special tokens, built in memory."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="<|im_end|>",
                                  additional_special_tokens=specials[:3])
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_llama_config(tok, n_layers: int = 4):
    """The tiny Llama's config (d_model 32) for the char-level tokenizer ``tok``."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=n_layers,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=0, bos_token_id=1,
                       tie_word_embeddings=False)


def make_tiny_model(seed: int = 0, n_layers: int = 4):
    """A random-init 4-layer Llama wrapped as a PersonaModel (fp32, CPU)."""
    from transformers import LlamaForCausalLM

    from persona_vectors import PersonaModel

    tok = make_tiny_tokenizer()
    torch.manual_seed(seed)
    hf = LlamaForCausalLM(tiny_llama_config(tok, n_layers)).eval()
    return PersonaModel.from_hf(hf, tok, model_id=f"tiny-llama-seed{seed}")


def smol_cache_dir():
    """The SmolLM2 weight cache directory (the cache may hold other embedded models' too), or ``None``."""
    from persona_vectors.models import cached_model_dir, embedded_gguf_path

    return cached_model_dir(embedded_gguf_path())


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def worker_threads() -> int:
    """Torch threads per test process: the cores (at most 2) split among pytest-xdist workers (``make test``
    runs ``-n 2``), so two workers never oversubscribe the cores; subprocesses inherit it via OMP_NUM_THREADS."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return max(1, min(2, os.cpu_count() or 1) // max(1, workers))


if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS", str(worker_threads()))


@pytest.fixture(scope="session", autouse=True)
def _threads():
    torch.set_num_threads(worker_threads())


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module: small latency-bound forwards are faster on shared cores.

    Use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def tiny():
    return make_tiny_model()


@pytest.fixture(scope="session")
def smol():
    """The embedded SmolLM2-135M-Instruct (loaded once per test session)."""
    from persona_vectors import load_model

    return load_model(progress=False)


@pytest.fixture(scope="session")
def gemma():
    """The second embedded model, Gemma 3 270M base (loaded once per test session; the first load joins its
    chunks and dequantizes it, a few minutes on 2 cores)."""
    from persona_vectors import load_model

    return load_model("gemma-3-270m", progress=False)


CONVS = [
    [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am a small model."}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."},
     {"role": "assistant", "content": "Red."}],
    [{"role": "user", "content": "Tell me a longer story about the sea, please."},
     {"role": "assistant", "content": "Once upon a time the sea was calm and wide."}],
]


@contextlib.contextmanager
def ray_cluster(num_cpus: int = 2) -> Iterator[None]:
    """A local Ray cluster (``ray.init(num_cpus=...)``) whose actors import tests/ and src/ like this process and
    use one torch thread; the environment is restored and Ray shut down on exit."""
    import ray

    here = Path(__file__).resolve().parent
    env = {"PYTHONPATH": os.pathsep.join([str(here), str(here.parent / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
