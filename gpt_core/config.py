"""Model configuration: one frozen dataclass with named presets."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from .errors import InvalidInput


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 50257      # number of token ids (GPT-2 BPE: 50,257)
    context_length: int = 1024   # longest sequence the position table covers
    d_model: int = 768           # width of the residual stream (embedding size)
    n_heads: int = 12            # attention heads per block
    n_layers: int = 12           # transformer blocks
    drop_rate: float = 0.0       # dropout on embeddings, attention and residual branches
    qkv_bias: bool = True        # GPT-2 has biases on the query/key/value projection
    ln_eps: float = 1e-5         # LayerNorm epsilon (GPT-2 uses 1e-5)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "d_model", "n_heads", "n_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise InvalidInput("config.not_positive", "{field} must be a positive whole number (got {value}).",
                                   field=name, value=repr(value)[:40])
        if self.d_model % self.n_heads:
            raise InvalidInput("config.heads_do_not_divide",
                               "The width d_model ({d_model}) must be divisible by the number of heads ({n_heads}).",
                               d_model=self.d_model, n_heads=self.n_heads)
        if not 0.0 <= self.drop_rate < 1.0:
            raise InvalidInput("config.bad_drop_rate", "The dropout rate must be at least 0 and below 1 (got {value}).",
                               value=self.drop_rate)
        if not self.ln_eps > 0:
            raise InvalidInput("config.bad_ln_eps", "The LayerNorm epsilon must be positive (got {value}).",
                               value=self.ln_eps)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GPTConfig":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def with_(self, **changes) -> "GPTConfig":
        return replace(self, **changes)

    @classmethod
    def preset(cls, name: str) -> "GPTConfig":
        try:
            return PRESETS[name]
        except KeyError:
            raise InvalidInput("config.unknown_preset", "Unknown preset '{name}': choose one of {choices}.",
                               name=str(name)[:40], choices=", ".join(sorted(PRESETS))) from None


PRESETS: dict[str, GPTConfig] = {
    # GPT-2 small, 124M parameters
    "gpt2": GPTConfig(),
    # GPT-2 medium, 355M parameters (the usual base for instruction fine-tuning)
    "gpt2-medium": GPTConfig(d_model=1024, n_heads=16, n_layers=24),
    # a classroom-sized model that trains in seconds on a CPU
    "tiny": GPTConfig(context_length=128, d_model=64, n_heads=4, n_layers=2),
}
