"""MiniLLM in PyTorch: the GPT and Llama models of minillm-jax, with all their dense options.

It computes what minillm_jax.model.transformer.Transformer computes (float32 logits equal to ~1e-6):
  embeddings   gpt: wte(ids) + wpe(position); llama: wte(ids) (positions enter through RoPE)
  blocks       for each sublayer of config.block_pattern, pre-norm with a residual:
               x = x + sublayer(ln_k(x)); norms are LayerNorm (gpt) or RMSNorm (llama)
  attn         c_attn -> q | k | v (heads contiguous); qk_norm: RMSNorm over each head's
               features of q and k; llama: RoPE on interleaved pairs (2j, 2j+1); causal softmax
               attention scaled by 1/sqrt(head_dim); c_proj
  mlp          gelu (exact erf) / relu2: c_proj(act(c_fc x)); swiglu: c_proj(silu(w1 x) * w2 x)
  residuals    weighted_residual: the input of block r+1 (and of ln_f for r = n_layer) is
               sum_{j<=r} residual_weights[r-1, j] * h_j, h_0 the embeddings, h_j block j's output;
               unet_skips: x += unet_skip_weights[i] * (block i's output) before block n-1-i
  window       attention_window > 0: in the layers windowed_layers marks, query p sees keys
               (p - window, p] (the cached ones too)
  value_embeddings (K > 0, modded-nanogpt): layers j and n_layer-K+j add table j's embedding of
               the token to the attention values, per head h: v_h += g_h * ve_h with
               g = 2 sigmoid(cat(x[:6], ve[:6]) @ ve_gate), x the attention's normed input
  smear        (modded-nanogpt) after the embeddings: x_t += lambda * sigmoid(x_t[:12] . gate)
               * x_{t-1} for t >= 1 (not across padding); with a cache, the last embedding
               is kept on the cache object for the next call
  output       ln_f, lm_head (tied to wte or not), logits = cap * tanh(logits / cap) when
               logit_softcap > 0
Parameter names are minillm-jax's (model.wte, model.blocks.{i}.attn.c_attn, ...) with torch's
Linear layout (out, in). Needs only torch and transformers (loaded with trust_remote_code=True).
Generation keeps keys and values (after qk_norm and RoPE) in transformers' DynamicCache.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_minillm import MiniLLMConfig

# The keyword under which transformers passes and returns the KV cache: `cache` in recent
# versions, `past_key_values` before.
CACHE_FIELD = ("cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__
               else "past_key_values")


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps), computed in float32, cast back, then scaled."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.to(x.dtype) * self.weight.to(x.dtype)


class LayerNorm(nn.Module):
    """LayerNorm with a weight and an optional bias, computed in float32."""

    def __init__(self, dim: int, eps: float, bias: bool):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.weight.shape, self.weight.float(), bias,
                            self.eps).to(x.dtype)


def make_norm(config: MiniLLMConfig) -> nn.Module:
    if config.block_type == "llama":
        return RMSNorm(config.n_embd, config.rmsnorm_eps)
    return LayerNorm(config.n_embd, config.layernorm_eps, config.bias)


def apply_rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotates the interleaved pairs (x[2j], x[2j+1]) of x (B, T, nh, hs) by the angles
    position * theta^(-2j/hs), in float32; positions (B, T)."""
    hs = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, hs, 2, dtype=torch.float32, device=x.device) / hs))
    angles = positions.float()[..., None] * inv_freq  # (B, T, hs/2)
    cos, sin = angles.cos()[:, :, None, :], angles.sin()[:, :, None, :]
    pairs = x.float().unflatten(-1, (hs // 2, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, config: MiniLLMConfig, layer_idx: int):
        super().__init__()
        c = config.n_embd
        self.n_head, self.head_dim = config.n_head, c // config.n_head
        self.layer_idx = layer_idx  # its slot in the KV cache
        self.rope_theta = config.rope_theta if config.block_type == "llama" else None
        self.attention_dropout = config.attention_dropout
        self.c_attn = nn.Linear(c, 3 * c, bias=config.bias)
        self.c_proj = nn.Linear(c, c, bias=config.bias)
        if config.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, config.rmsnorm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rmsnorm_eps)
        self.qk_norm = config.qk_norm
        self.dropout = nn.Dropout(config.dropout)
        if getattr(config, "value_embeddings", 0):
            self.ve_gate = nn.Parameter(torch.zeros(2 * VE_GATE_CHANNELS, config.n_head))

    def forward(self, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
                cache: DynamicCache | None, ve: torch.Tensor | None = None) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).view(b, t, 3, self.n_head, self.head_dim).unbind(2)
        if ve is not None:
            g = VE_GATE_CHANNELS
            gate_in = torch.cat([x[..., :g], ve[..., :g]], dim=-1)
            gate = 2 * torch.sigmoid(gate_in @ self.ve_gate.to(x.dtype))  # (B, T, nh)
            v = v + gate[..., None] * ve.view(b, t, self.n_head, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope_theta is not None:
            q, k = apply_rope(q, positions, self.rope_theta), apply_rope(k, positions, self.rope_theta)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # (B, nh, T, hs)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attention_dropout if self.training else 0.0)
        return self.dropout(self.c_proj(y.transpose(1, 2).reshape(b, t, c)))


VE_GATE_CHANNELS = 6  # channels of x and of the value embedding feeding the gates
SMEAR_GATE_CHANNELS = 12


def value_embedding_tables(n_layer: int, k: int) -> list[int]:
    """The value-embedding table of each layer, -1 for none: table j -> layers j, n_layer-k+j."""
    tables = [-1] * n_layer
    for j in range(k):
        tables[j] = tables[n_layer - k + j] = j
    return tables


class ValueEmbeddings(nn.Module):
    """K token-embedding tables, weight (K, V, C)."""

    def __init__(self, config: MiniLLMConfig):
        super().__init__()
        self.weight = nn.Parameter(
            torch.zeros(config.value_embeddings, config.vocab_size, config.n_embd))


class Smear(nn.Module):
    """x_t + lambda * sigmoid(x_t[:12] . gate) * x_{t-1}; `previous` (B, C) is the embedding
    before the first token (zeros where there is none), `valid` (B, T) 0 where x_{t-1} is
    padding."""

    def __init__(self):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(SMEAR_GATE_CHANNELS))
        self.register_parameter("lambda", nn.Parameter(torch.zeros(())))

    def forward(self, x: torch.Tensor, previous: torch.Tensor,
                valid: torch.Tensor | None) -> torch.Tensor:
        before = torch.cat([previous[:, None].to(x.dtype), x[:, :-1]], dim=1)
        if valid is not None:
            before = before * valid[..., None].to(x.dtype)
        share = getattr(self, "lambda").to(x.dtype) * torch.sigmoid(
            x[..., :SMEAR_GATE_CHANNELS] @ self.gate.to(x.dtype))
        return x + share[..., None] * before


class MLP(nn.Module):
    def __init__(self, config: MiniLLMConfig):
        super().__init__()
        c, h = config.n_embd, config.mlp_hidden
        bias = config.bias and config.block_type == "gpt"  # llama MLPs have no biases
        self.activation = config.mlp_activation
        if self.activation == "swiglu":
            self.w1 = nn.Linear(c, h, bias=bias)
            self.w2 = nn.Linear(c, h, bias=bias)
        else:
            self.c_fc = nn.Linear(c, h, bias=bias)
        self.c_proj = nn.Linear(h, c, bias=bias)
        self.dropout = nn.Dropout(config.dropout if config.block_type == "gpt" else 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation == "swiglu":
            h = F.silu(self.w1(x)) * self.w2(x)
        elif self.activation == "gelu":
            h = F.gelu(self.c_fc(x))
        elif self.activation == "relu2":
            h = F.relu(self.c_fc(x)).square()
        else:
            raise ValueError(f"unknown mlp_activation {self.activation!r}")
        return self.dropout(self.c_proj(h))


def sublayer_names(pattern: list[str]) -> list[tuple[str, str]]:
    """(kind, module name) per sublayer: a kind that occurs once is named after itself, repeated
    kinds are numbered from 0 in order (mlp_0, mlp_1, ...)."""
    counts = {kind: pattern.count(kind) for kind in pattern}
    seen: dict[str, int] = {}
    names = []
    for kind in pattern:
        index = seen.get(kind, 0)
        seen[kind] = index + 1
        names.append((kind, kind if counts[kind] == 1 else f"{kind}_{index}"))
    return names


class Block(nn.Module):
    def __init__(self, config: MiniLLMConfig, layer_idx: int):
        super().__init__()
        self.sublayers = sublayer_names(config.block_pattern)
        for i, (kind, name) in enumerate(self.sublayers):
            self.add_module(f"ln_{i + 1}", make_norm(config))
            self.add_module(name, Attention(config, layer_idx) if kind == "attn" else MLP(config))

    def forward(self, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
                cache: DynamicCache | None, ve: torch.Tensor | None = None) -> torch.Tensor:
        for i, (kind, name) in enumerate(self.sublayers):
            h = getattr(self, f"ln_{i + 1}")(x)
            layer = getattr(self, name)
            x = x + (layer(h, positions, mask, cache, ve) if kind == "attn" else layer(h))
        return x


def causal_mask(attention_mask: torch.Tensor | None, batch: int, length: int, past: int,
                device: torch.device, window: int = 0) -> torch.Tensor:
    """Boolean (B, 1, T, past + T) mask: query i (cache row past + i) sees cache rows <= its own
    (and > its own - window when window > 0) that are not padding (attention_mask 0). A query
    always sees itself, so that padded rows (whose outputs nobody reads) never have an empty
    softmax. Windows count cache rows, which are positions for unpadded rows."""
    rows = past + torch.arange(length, device=device)[:, None]
    keys = torch.arange(past + length, device=device)[None, :]
    allowed = keys <= rows
    if window > 0:
        allowed = allowed & (rows - keys < window)
    allowed = allowed[None, None].expand(batch, 1, length, past + length)
    if attention_mask is not None:
        if attention_mask.dim() != 2:
            raise ValueError("MiniLLM takes a 2-D (batch, length) padding attention_mask")
        allowed = allowed & attention_mask[:, None, None, -(past + length):].bool()
    return allowed | (keys == rows)[None, None]


class MiniLLMPreTrainedModel(PreTrainedModel):
    config_class = MiniLLMConfig
    base_model_prefix = "model"
    _no_split_modules = ["Block"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        """minillm-jax's initialisation N(0, initializer_range); norms at one, biases zero."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, std)
        elif isinstance(module, (RMSNorm, LayerNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, ValueEmbeddings):
            nn.init.normal_(module.weight, 0.0, 0.01)
        elif isinstance(module, Smear):
            nn.init.zeros_(module.gate)
            nn.init.zeros_(getattr(module, "lambda"))
        elif isinstance(module, MiniLLMModel) and module.residual_weights is not None:
            with torch.no_grad():
                module.residual_weights.copy_(identity_residual_weights(module.config.n_layer))
        if isinstance(module, MiniLLMModel) and module.unet_skip_weights is not None:
            nn.init.zeros_(module.unet_skip_weights)


def identity_residual_weights(n_layer: int) -> torch.Tensor:
    """w[r-1, r] = 1: the weighted residual network that equals the plain one."""
    weights = torch.zeros(n_layer, n_layer + 1)
    weights[torch.arange(n_layer), torch.arange(1, n_layer + 1)] = 1.0
    return weights


class MiniLLMModel(MiniLLMPreTrainedModel):
    """Token ids -> final normed hidden states (B, T, C)."""

    def __init__(self, config: MiniLLMConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = (nn.Embedding(config.sequence_length, config.n_embd)
                    if config.block_type == "gpt" else None)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.residual_weights = (nn.Parameter(identity_residual_weights(config.n_layer))
                                 if config.weighted_residual else None)
        self.unet_skip_weights = (nn.Parameter(torch.zeros(config.n_layer // 2))
                                  if getattr(config, "unet_skips", False) else None)
        self.ln_f = make_norm(config)
        k = getattr(config, "value_embeddings", 0)
        self.value_embeds = ValueEmbeddings(config) if k else None
        self.ve_tables = value_embedding_tables(config.n_layer, k)
        self.smear = Smear() if getattr(config, "smear", False) else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.wte = value

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, cache: DynamicCache | None = None,
                use_cache: bool = False) -> tuple[torch.Tensor, DynamicCache | None]:
        batch, length = input_ids.shape
        if use_cache and cache is None:
            cache = DynamicCache()
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = (past + torch.arange(length, device=input_ids.device)).expand(batch, -1)
        x = self.wte(input_ids)
        if self.wpe is not None:
            x = x + self.wpe(position_ids)
        if self.smear is not None:
            x = self._smear(x, attention_mask, past, cache)
        x = self.drop(x)
        full = causal_mask(attention_mask, batch, length, past, input_ids.device)
        window = getattr(self.config, "attention_window", 0)
        banded = (causal_mask(attention_mask, batch, length, past, input_ids.device, window)
                  if window > 0 else full)
        windowed = getattr(self.config, "windowed_layers", None) or [False] * len(self.blocks)
        masks = [banded if w else full for w in windowed]
        ves = ([None] * len(self.blocks) if self.value_embeds is None
               else [None if j < 0 else self.value_embeds.weight[j][input_ids]
                     for j in self.ve_tables])
        if self.residual_weights is not None:
            x = self._weighted_residual_blocks(x, position_ids, masks, cache, ves)
        elif self.unet_skip_weights is not None:
            x = self._unet_blocks(x, position_ids, masks, cache, ves)
        else:
            for block, mask, ve in zip(self.blocks, masks, ves):
                x = block(x, position_ids, mask, cache, ve)
        return self.ln_f(x), cache

    def _smear(self, x: torch.Tensor, attention_mask: torch.Tensor | None, past: int,
               cache: DynamicCache | None) -> torch.Tensor:
        """Smear, with the previous call's last embedding kept on the cache object; a token
        whose previous position is padding (attention_mask 0) or absent is left as it is."""
        previous = getattr(cache, "minillm_smear_previous", None) if past else None
        if previous is None:
            previous = torch.zeros_like(x[:, 0])
        valid = None
        if attention_mask is not None:
            full = attention_mask[:, -(past + x.shape[1]):]
            valid = torch.cat([torch.zeros_like(full[:, :1]), full[:, :-1]], 1)[:, past:]
        out = self.smear(x, previous, valid)
        if cache is not None:
            cache.minillm_smear_previous = x[:, -1]
        return out

    def _unet_blocks(self, x: torch.Tensor, positions: torch.Tensor, masks: list[torch.Tensor],
                     cache: DynamicCache | None, ves: list) -> torch.Tensor:
        """U-net skips: before block n-1-i, x += unet_skip_weights[i] * (block i's output)."""
        n = len(self.blocks)
        weights = self.unet_skip_weights.to(x.dtype)
        outputs = []
        for r, (block, mask) in enumerate(zip(self.blocks, masks)):
            if r >= n - n // 2:
                x = x + weights[n - 1 - r] * outputs[n - 1 - r]
            x = block(x, positions, mask, cache, ves[r])
            outputs.append(x)
        return x

    def _weighted_residual_blocks(self, h0: torch.Tensor, positions: torch.Tensor,
                                  masks: list[torch.Tensor], cache: DynamicCache | None,
                                  ves: list) -> torch.Tensor:
        weights = self.residual_weights.to(h0.dtype)
        outputs = [h0]

        def mix(r: int) -> torch.Tensor:  # the input of block r+1: sum_{j<=r} w[r-1, j] h_j
            x = weights[r - 1, 0] * outputs[0]
            for j in range(1, r + 1):
                x = x + weights[r - 1, j] * outputs[j]
            return x

        for r, (block, mask) in enumerate(zip(self.blocks, masks)):
            outputs.append(block(h0 if r == 0 else mix(r), positions, mask, cache, ves[r]))
        return mix(len(self.blocks))


class MiniLLMForCausalLM(MiniLLMPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.wte.weight"}

    def __init__(self, config: MiniLLMConfig):
        super().__init__(config)
        self.model = MiniLLMModel(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.wte = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, cache: DynamicCache | None = None,
                past_key_values: DynamicCache | None = None, labels: torch.LongTensor | None = None,
                use_cache: bool | None = None, logits_to_keep: int = 0, return_dict: bool = True,
                **kwargs) -> CausalLMOutputWithPast:
        """Logits (B, T, V) in the weights' dtype; with labels (ids, -100 ignored) also the mean
        next-token cross entropy; with use_cache the DynamicCache for the next call."""
        cache = cache if cache is not None else past_key_values
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        hidden, cache = self.model(input_ids, attention_mask, position_ids, cache, use_cache)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        cap = self.config.logit_softcap
        if cap > 0:
            logits = cap * torch.tanh(logits / cap)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                   ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits,
                                      **{CACHE_FIELD: cache if use_cache else None})
