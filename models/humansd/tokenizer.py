"""SD2's text tokenizer, offline: exactly what HumanSD's `FrozenOpenCLIPEmbedder` calls (`open_clip.tokenize`).

open_clip's `SimpleTokenizer` ships its BPE vocabulary (`bpe_simple_vocab_16e6.txt.gz`) inside the package:
ftfy + HTML-unescape + whitespace clean + lower-case, `<|startoftext|>` … `<|endoftext|>`, truncated to 77 tokens
with the end token kept, padded with id 0 (the token '!', which is what SD2's diffusers tokenizer pads with).
"""
from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=2)
def _simple_tokenizer(context_length: int):
    from ...utils import compat
    compat.install_import_hook()  # open_clip imports torchvision (CPU nms shim, see utils/compat.py)
    from open_clip.tokenizer import SimpleTokenizer
    return SimpleTokenizer(context_length=context_length)


class OpenCLIPTokenizer:
    """`tokenizer(list_of_texts) -> LongTensor [B, context_length]` (SD2 / OpenCLIP ids)."""

    pad_token_id = 0  # '!'

    def __init__(self, context_length: int = 77):
        self.context_length = int(context_length)

    @property
    def vocab_size(self) -> int:
        return len(_simple_tokenizer(self.context_length).encoder)

    def __call__(self, texts):
        if isinstance(texts, str):
            texts = [texts]
        return _simple_tokenizer(self.context_length)(list(texts), context_length=self.context_length)

    def __repr__(self) -> str:
        return f"OpenCLIPTokenizer(context_length={self.context_length})"
