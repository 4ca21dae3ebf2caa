"""An independent PyTorch implementation of llm-baselines' GPTBase and Llama (docs/llm-baselines.md#gptbase-architecture-and-initialisation).

Written from the reference facts, not from our JAX code, with llm-baselines' module and
parameter names so that `load_state_dict(..., strict=True)` checks every key:
  - GPTBase: wte + learned wpe, pre-LN blocks, custom LayerNorm (weight, optional bias,
    eps 1e-5), c_attn -> q|k|v (heads contiguous), SDPA causal, c_proj; MLP c_fc, exact GELU,
    c_proj; ln_f; lm_head tied to wte.
  - Llama: wte only, RMSNorm (float32 normalise, cast back, times weight), RoPE on q, k in
    (B, T, nh, hs) layout with *interleaved* pairs, computed with complex numbers as in the
    LauzHack code (freqs_cis is a plain attribute, not in the state dict); SwiGLU
    c_proj(silu(w1 x) * w2 x) with hidden multiple_of * ceil(int(8C/3) / multiple_of), no biases.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Args:
    """The llm-baselines command-line arguments the models read."""

    model: str = "base"  # base | llama2
    n_layer: int = 12
    n_embd: int = 768
    n_head: int = 12
    vocab_size: int = 50304
    sequence_length: int = 512
    bias: bool = False
    dropout: float = 0.0
    rmsnorm_eps: float = 1e-5
    multiple_of: int = 256


class LayerNorm(nn.Module):
    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, a: Args):
        super().__init__()
        self.c_attn = nn.Linear(a.n_embd, 3 * a.n_embd, bias=a.bias)
        self.c_proj = nn.Linear(a.n_embd, a.n_embd, bias=a.bias)
        self.resid_dropout = nn.Dropout(a.dropout)
        self.n_head, self.n_embd, self.dropout = a.n_head, a.n_embd, a.dropout

    def qkv(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        shape = (b, t, self.n_head, c // self.n_head)
        return q.view(shape), k.view(shape), v.view(shape)

    def attend(self, q, k, v):
        b, t, nh, hs = q.shape
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None,
                                           dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=True)
        y = y.transpose(1, 2).contiguous().view(b, t, nh * hs)
        return self.resid_dropout(self.c_proj(y))

    def forward(self, x):
        return self.attend(*self.qkv(x))


class MLP(nn.Module):
    def __init__(self, a: Args):
        super().__init__()
        self.c_fc = nn.Linear(a.n_embd, 4 * a.n_embd, bias=a.bias)
        self.gelu = nn.GELU()  # exact erf GELU
        self.c_proj = nn.Linear(4 * a.n_embd, a.n_embd, bias=a.bias)
        self.dropout = nn.Dropout(a.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, a: Args):
        super().__init__()
        self.ln_1 = LayerNorm(a.n_embd, a.bias)
        self.attn = CausalSelfAttention(a)
        self.ln_2 = LayerNorm(a.n_embd, a.bias)
        self.mlp = MLP(a)

    def forward(self, x, *extra):
        x = x + self.attn(self.ln_1(x), *extra)
        return x + self.mlp(self.ln_2(x))


class GPTBase(nn.Module):
    def __init__(self, a: Args):
        super().__init__()
        self.args = a
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(a.vocab_size, a.n_embd),
            wpe=nn.Embedding(a.sequence_length, a.n_embd),
            drop=nn.Dropout(a.dropout),
            h=nn.ModuleList([Block(a) for _ in range(a.n_layer)]),
            ln_f=LayerNorm(a.n_embd, a.bias)))
        self.lm_head = nn.Linear(a.n_embd, a.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied, as in llm-baselines

    def embed(self, idx):
        pos = torch.arange(idx.shape[1], device=idx.device)
        return self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))

    def forward(self, idx, targets=None):
        x = self.embed(idx)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1),
                                   ignore_index=-1)
        return {"logits": logits, "loss": loss}


# --------------------------------------------------------------------------- Llama


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.type_as(x) * self.weight


def precompute_freqs_cis(dim: int, end: int, theta: float = 10000.0):
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: (dim // 2)].float() / dim))
    t = torch.arange(end, device=freqs.device)
    return torch.polar(torch.ones(end, dim // 2), torch.outer(t, freqs).float())  # complex64


def apply_rotary_emb(q, k, freqs_cis):
    """q, k: (B, T, nh, hs); pairs (2j, 2j+1) are the real/imaginary parts of complex number j."""
    qc = torch.view_as_complex(q.float().reshape(*q.shape[:-1], -1, 2))
    kc = torch.view_as_complex(k.float().reshape(*k.shape[:-1], -1, 2))
    f = freqs_cis[: q.shape[1]].view(1, q.shape[1], 1, q.shape[-1] // 2)
    return (torch.view_as_real(qc * f).flatten(3).type_as(q),
            torch.view_as_real(kc * f).flatten(3).type_as(k))


class LlamaAttention(CausalSelfAttention):
    def forward(self, x, freqs_cis):
        q, k, v = self.qkv(x)
        q, k = apply_rotary_emb(q, k, freqs_cis)
        return self.attend(q, k, v)


class LlamaMLP(nn.Module):
    def __init__(self, a: Args):
        super().__init__()
        hidden = int(2 * (4 * a.n_embd) / 3)
        hidden = a.multiple_of * ((hidden + a.multiple_of - 1) // a.multiple_of)
        self.w1 = nn.Linear(a.n_embd, hidden, bias=False)
        self.w2 = nn.Linear(a.n_embd, hidden, bias=False)
        self.c_proj = nn.Linear(hidden, a.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.silu(self.w1(x)) * self.w2(x))


class LlamaBlock(nn.Module):
    def __init__(self, a: Args):
        super().__init__()
        self.ln_1 = RMSNorm(a.n_embd, a.rmsnorm_eps)
        self.attn = LlamaAttention(a)
        self.ln_2 = RMSNorm(a.n_embd, a.rmsnorm_eps)
        self.mlp = LlamaMLP(a)

    def forward(self, x, freqs_cis):
        x = x + self.attn(self.ln_1(x), freqs_cis)
        return x + self.mlp(self.ln_2(x))


class Llama(GPTBase):
    def __init__(self, a: Args):
        super().__init__(a)
        self.freqs_cis = precompute_freqs_cis(a.n_embd // a.n_head, a.sequence_length)
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(a.vocab_size, a.n_embd),
            drop=nn.Dropout(a.dropout),
            h=nn.ModuleList([LlamaBlock(a) for _ in range(a.n_layer)]),
            ln_f=RMSNorm(a.n_embd, a.rmsnorm_eps)))
        self.lm_head = nn.Linear(a.n_embd, a.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight

    def forward(self, idx, targets=None):
        x = self.transformer.drop(self.transformer.wte(idx))
        for block in self.transformer.h:
            x = block(x, self.freqs_cis)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1),
                                   ignore_index=-1)
        return {"logits": logits, "loss": loss}


def build(args: dict | Args) -> GPTBase:
    """The model for an llm-baselines args dict (e.g. the exported args JSON)."""
    if isinstance(args, dict):
        fields = Args.__dataclass_fields__
        args = Args(**{k: v for k, v in args.items() if k in fields})
    if args.model in ("llama2", "llama"):
        return Llama(args)
    if args.model == "base":
        return GPTBase(args)
    raise ValueError(f"unknown model {args.model!r}")


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

