"""Configuration of MiniLLM models: the GPT and Llama models trained with minillm-jax."""

from transformers import PretrainedConfig


class MiniLLMConfig(PretrainedConfig):
    """The architecture fields of a minillm-jax model (its ModelConfig), under the same names.

    block_type: "gpt" (learned positions, LayerNorm) or "llama" (RoPE, RMSNorm).
    block_pattern: the sublayers of every block in order, e.g. ["attn", "mlp"].
    mlp_activation: "gelu" (exact), "relu2" or "swiglu"; mlp_hidden its hidden size.
    qk_norm: per-head RMSNorm on queries and keys (before RoPE).
    logit_softcap: > 0 bounds the logits to (-cap, cap) with cap * tanh(logits / cap).
    weighted_residual: DenseFormer depth-weighted averages of the block outputs.
    value_embeddings: K > 0 extra token embeddings added, gated per head, to the attention values
        of layers j and n_layer - K + j (table j; modded-nanogpt).
    smear: add a gated share of the previous token's embedding to each embedding (modded-nanogpt).
    unet_skips: U-net skips, block i's output times unet_skip_weights[i] added to the input of
        block n_layer-1-i (i < n_layer // 2).
    attention_window: > 0: sliding-window attention, query t sees keys (t - window, t], in the
        layers that windowed_layers (one bool per layer) marks; 0 = full causal everywhere.
    """

    model_type = "minillm"
    attribute_map = {"hidden_size": "n_embd", "num_hidden_layers": "n_layer",
                     "num_attention_heads": "n_head", "max_position_embeddings": "sequence_length"}

    def __init__(self, block_type: str = "llama", vocab_size: int = 50304, n_layer: int = 12,
                 n_embd: int = 768, n_head: int = 12, sequence_length: int = 1024,
                 bias: bool = False, rmsnorm_eps: float = 1e-5, layernorm_eps: float = 1e-5,
                 rope_theta: float = 10000.0, block_pattern: list[str] | None = None,
                 mlp_activation: str = "swiglu", mlp_hidden: int = 2048, qk_norm: bool = False,
                 logit_softcap: float = 0.0, weighted_residual: bool = False,
                 value_embeddings: int = 0, smear: bool = False,
                 unet_skips: bool = False, attention_window: int = 0,
                 windowed_layers: list[bool] | None = None,
                 dropout: float = 0.0, attention_dropout: float = 0.0,
                 initializer_range: float = 0.02, tie_word_embeddings: bool = True,
                 use_cache: bool = True, **kwargs):
        self.block_type = block_type
        self.vocab_size = vocab_size
        self.n_layer = n_layer
        self.n_embd = n_embd
        self.n_head = n_head
        self.sequence_length = sequence_length
        self.bias = bias
        self.rmsnorm_eps = rmsnorm_eps
        self.layernorm_eps = layernorm_eps
        self.rope_theta = rope_theta
        self.block_pattern = list(block_pattern or ["attn", "mlp"])
        self.mlp_activation = mlp_activation
        self.mlp_hidden = mlp_hidden
        self.qk_norm = qk_norm
        self.logit_softcap = logit_softcap
        self.weighted_residual = weighted_residual
        self.value_embeddings = value_embeddings
        self.smear = smear
        self.unet_skips = unet_skips
        self.attention_window = attention_window
        self.windowed_layers = list(windowed_layers or [attention_window > 0] * n_layer)
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
