"""Helpers the Ray sweep tests ship to Ray actors (importable in the actors' processes: tests/ is on their
PYTHONPATH): a replica loader for the tiny model and read-outs that kill the actor's process."""

from __future__ import annotations

import os


def tiny_replica():
    """The tiny test model (seed 0), as every actor loads it."""
    from conftest import make_tiny_model

    return make_tiny_model()


def save_tiny_checkpoint(directory) -> None:
    """A random tiny Llama (seed 0) with the char-level chat tokenizer, saved as a HF checkpoint directory that
    ``load_model(directory)`` loads (so actors reload it from the driver model's ``load_args``)."""
    import torch
    from transformers import LlamaForCausalLM

    from conftest import make_tiny_tokenizer, tiny_llama_config

    tok = make_tiny_tokenizer()
    torch.manual_seed(0)
    cfg = tiny_llama_config(tok)
    LlamaForCausalLM(cfg).eval().save_pretrained(directory)
    tok.save_pretrained(directory)


class DieOnce:
    """A read-out whose first call, across all processes, kills its own process (``os._exit``): an actor dying
    mid-batch. The marker file makes it once; later calls add nothing."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __call__(self, texts, rows):
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return [{} for _ in texts]
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os._exit(1)


class DieAt:
    """A read-out that kills its process whenever a batch holds ``prompt``: an actor that dies every time it runs
    that batch (with ``max_restarts=0``, for good)."""

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt

    def __call__(self, texts, rows):
        if any(r["prompt"] == self.prompt for r in rows):
            os._exit(1)
        return [{} for _ in texts]
