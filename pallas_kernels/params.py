"""Static kernel parameters: hashable frozen dataclasses, validated on construction."""

from __future__ import annotations

import dataclasses

VARIANTS = ("tpu", "gpu")


def _check(ok: bool, owner: str, field: str, expected: str, got) -> None:
    if not ok:
        raise ValueError(f"{owner}.{field}: expected {expected}, got {got!r}")


@dataclasses.dataclass(frozen=True)
class FlashParams:
    """Everything static about one flash-attention call (after padding decisions).

    seq_len is the caller's length; padded_len the multiple of both blocks the kernels see.
    num_groups = Hq // Hkv (query heads per kv head).
    """

    variant: str
    interpret: bool
    causal: bool
    sliding_window: int | None
    logit_soft_cap: float | None
    scale: float
    block_q: int
    block_kv: int
    seq_len: int
    padded_len: int
    num_groups: int
    has_segments: bool
    heads_minor: bool = False  # TPU only: q/k/v viewed as [B, S, H*D] (no transposes)

    def __post_init__(self):
        name = "FlashParams"
        _check(self.variant in VARIANTS, name, "variant", f"one of {VARIANTS}", self.variant)
        _check(self.sliding_window is None or self.sliding_window >= 1, name, "sliding_window",
               "None or an int >= 1", self.sliding_window)
        _check(self.logit_soft_cap is None or self.logit_soft_cap > 0, name, "logit_soft_cap",
               "None or a float > 0", self.logit_soft_cap)
        for field in ("block_q", "block_kv", "seq_len", "num_groups"):
            _check(getattr(self, field) >= 1, name, field, "an int >= 1", getattr(self, field))
        _check(self.padded_len % self.block_q == 0 and self.padded_len % self.block_kv == 0
               and self.padded_len >= self.seq_len, name, "padded_len",
               f"a multiple of block_q={self.block_q} and block_kv={self.block_kv} "
               f">= seq_len={self.seq_len}", self.padded_len)

    @property
    def num_q_blocks(self) -> int:
        return self.padded_len // self.block_q

    @property
    def num_kv_blocks(self) -> int:
        return self.padded_len // self.block_kv

    @property
    def kv_len_mask(self) -> int | None:
        """Length to mask padded keys at, or None when no padding key is ever visible.

        With causal masking a real query never sees a padded key (padded keys come after
        every real position), so the extra compare is skipped.
        """
        if self.padded_len == self.seq_len or self.causal:
            return None
        return self.seq_len

    @property
    def mask_kwargs(self) -> dict:
        return dict(causal=self.causal, sliding_window=self.sliding_window,
                    kv_len=self.kv_len_mask)

    @property
    def range_kwargs(self) -> dict:
        return dict(block_q=self.block_q, block_kv=self.block_kv, causal=self.causal,
                    sliding_window=self.sliding_window)


@dataclasses.dataclass(frozen=True)
class DecodeParams:
    """Static parameters of one decode-attention call.

    rows = window * num_groups query rows per kv head (row r is window slot r // num_groups);
    padded_rows >= rows is what the kernel sees (GPU tiles need >= 16 rows).
    """

    variant: str
    interpret: bool
    window: int
    num_groups: int
    padded_rows: int
    cache_len: int
    block_kv: int
    sliding_window: int | None
    logit_soft_cap: float | None
    scale: float
    kv_splits: int = 1  # GPU: independent kv chunks per (batch, head), combined afterwards

    def __post_init__(self):
        name = "DecodeParams"
        _check(self.variant in VARIANTS, name, "variant", f"one of {VARIANTS}", self.variant)
        for field in ("window", "num_groups", "cache_len", "block_kv", "kv_splits"):
            _check(getattr(self, field) >= 1, name, field, "an int >= 1", getattr(self, field))
        _check(self.padded_rows >= self.rows, name, "padded_rows", f">= rows={self.rows}",
               self.padded_rows)
        _check(self.sliding_window is None or self.sliding_window >= 1, name, "sliding_window",
               "None or an int >= 1", self.sliding_window)
        _check(self.logit_soft_cap is None or self.logit_soft_cap > 0, name, "logit_soft_cap",
               "None or a float > 0", self.logit_soft_cap)

    @property
    def rows(self) -> int:
        return self.window * self.num_groups

    @property
    def num_kv_blocks(self) -> int:
        return -(-self.cache_len // self.block_kv)
