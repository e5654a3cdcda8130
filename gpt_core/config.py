"""Model configuration: one frozen dataclass with named presets."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace


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
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {self.drop_rate}")
        if not self.ln_eps > 0:
            raise ValueError(f"ln_eps must be positive, got {self.ln_eps}")

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
            raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


PRESETS: dict[str, GPTConfig] = {
    # GPT-2 small, 124M parameters
    "gpt2": GPTConfig(),
    # GPT-2 medium, 355M parameters (seed 001 fine-tunes this one)
    "gpt2-medium": GPTConfig(d_model=1024, n_heads=16, n_layers=24),
    # a classroom-sized model that trains in seconds on a CPU
    "tiny": GPTConfig(context_length=128, d_model=64, n_heads=4, n_layers=2),
}
