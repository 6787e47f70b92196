"""The zoo's word-level tokenizer (built here from mmcam.data.VOCAB, no hub files) and the
captioner's processor."""

from __future__ import annotations

from typing import Any

from .processing import to_pixel_tensor

__all__ = ["SPECIAL", "word_tokenizer", "CaptionProcessor", "VQAProcessor"]

SPECIAL = ("[PAD]", "[BOS]", "[EOS]", "[UNK]")


def word_tokenizer(words: list[str]):
    """A ``transformers.PreTrainedTokenizerFast`` over a WordLevel model: one token per word."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(list(SPECIAL) + list(words))}
    core = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]")


class CaptionProcessor:
    """Images → ``{"pixel_values"}``; text ↔ ids through ``.tokenizer``."""

    def __init__(self, words: list[str], size: int = 64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
        self.tokenizer = word_tokenizer(words)
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)

    def __call__(self, images: Any = None, text: Any = None, return_tensors: str = "pt", **_: Any) -> dict:
        out: dict = {}
        if images is not None:
            out["pixel_values"] = to_pixel_tensor(images, self.size, self.mean, self.std)
        if text is not None:
            out.update(self.tokenizer(text, return_tensors="pt", padding=True, add_special_tokens=False))
        return out

    def batch_decode(self, ids: Any, skip_special_tokens: bool = True) -> list[str]:
        return self.tokenizer.batch_decode(ids, skip_special_tokens=skip_special_tokens)

    def decode(self, ids: Any, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


class VQAProcessor(CaptionProcessor):
    """Image + question → ViLT inputs (``input_ids`` with ``[BOS]`` as the CLS token,
    ``attention_mask``, ``token_type_ids``, ``pixel_values``, ``pixel_mask``)."""

    def __call__(self, images: Any = None, text: Any = None, return_tensors: str = "pt", **_: Any) -> dict:
        import torch

        out: dict = {}
        if images is not None:
            x = to_pixel_tensor(images, self.size, self.mean, self.std)
            out["pixel_values"] = x
            out["pixel_mask"] = torch.ones(x.shape[0], x.shape[2], x.shape[3], dtype=torch.long)
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            enc = self.tokenizer(["[BOS] " + t for t in texts], padding=True, add_special_tokens=False, return_tensors="pt")
            out["input_ids"] = enc["input_ids"]
            out["attention_mask"] = enc["attention_mask"]
            out["token_type_ids"] = torch.zeros_like(enc["input_ids"])
        return out
