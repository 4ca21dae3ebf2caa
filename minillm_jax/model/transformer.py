"""GPTBase and Llama from llm-baselines, in Flax linen (docs/llm-baselines.md).

Parameter layout (what checkpoints and the PyTorch converter see): the transformer blocks are
stacked along a leading `n_layer` axis under params["blocks"], whether or not the forward pass runs
them with a scan, so checkpoints do not depend on `scan_layers`. Dense kernels are (in, out).

    wte/embedding (V, C)          wpe/embedding (L, C)            [gpt only]
    blocks/ln_1/scale (n, C)      blocks/attn/c_attn/kernel (n, C, 3C)   columns: q | k | v
    blocks/attn/c_proj/kernel (n, C, C)      blocks/ln_2/scale (n, C)
    gpt:   blocks/mlp/c_fc/kernel (n, C, 4C)  blocks/mlp/c_proj/kernel (n, 4C, C)
    llama: blocks/mlp/w1/kernel (n, C, H)     blocks/mlp/w2/kernel (n, C, H)  blocks/mlp/c_proj/kernel (n, H, C)
    ln_f/scale (C,)               lm_head/kernel (C, V)            [only when tie_embeddings=False]
    (+ "bias" leaves when bias=True, as in docs/llm-baselines.md#state-dict-names-and-shapes)

Architecture options (configs/moe.py, configs/brainformer.py; minillm_jax/model/moe.py):

block_pattern: the sublayers of every block, in order, each pre-normed with a residual:
    x = x + sublayer_i(ln_{i+1}(x)). Kinds: attn, mlp, moe. The default "attn,mlp" is the plain
    GPT/Llama block above (identical parameters). A kind that occurs once is named after itself
    (attn, mlp, moe); repeated kinds are numbered from 0 in order (moe_0, mlp_0, moe_1, ...). The
    Brainformer block "attn,moe,mlp,moe,mlp,moe" has blocks/attn, blocks/moe_0, blocks/mlp_0,
    blocks/moe_1, blocks/mlp_1, blocks/moe_2 and blocks/ln_1 .. blocks/ln_6. Residual-branch output
    projections (attn/mlp/expert c_proj) are initialised N(0, init_std / sqrt(len(pattern) *
    n_layer)) (llm-baselines' 2 * n_layer for the plain block).
MoE sublayer (E = moe_n_experts, H = moe_hidden or the dense MLP hidden size):
    blocks/moe/router/kernel (n, C, E)
    llama: blocks/moe/w1/kernel (n, E, C, H)  blocks/moe/w2/kernel (n, E, C, H)
           blocks/moe/c_proj/kernel (n, E, H, C)
    gpt:   blocks/moe/c_fc/kernel (n, E, C, H)  blocks/moe/c_proj/kernel (n, E, H, C)
           (+ c_fc/bias (n, E, H), c_proj/bias (n, E, C) when bias=True)
    i.e. torch-style expert e, layer i: w1.weight = kernel[i, e].T (out, in).
unet_skips (modded-nanogpt U-net skips, Transformer._unet_skip_stack): unet_skip_weights
    (n//2,), float32, not decayed, zero at init (the plain network).
attention_window / attention_window_layers (sliding-window attention,
    minillm_jax/model/attention.py): no parameters.
weighted_residual (DenseFormer depth-weighted average): residual_weights (n, n+1), float32, not
    decayed. Row r-1 (r = 1..n) mixes the embedding h_0 and the block outputs h_1..h_r into the
    input of block r+1 (row n-1: the input of ln_f): x_r = sum_{j<=r} w[r-1, j] h_j, entries j > r
    masked to 0. Initialised to w[r-1, j] = [j == r], which is exactly the plain residual network.
value_embeddings, smear (modded-nanogpt; minillm_jax/model/token_embedding_options.py):
    value_embeds/embedding (K, V, C)   blocks/attn/ve_gate (n, 12, nh)   [value_embeddings = K > 0]
    smear/gate (12,)   smear/lambda ()   [smear]; decode keeps cache/smear/previous (B, L, C)

Decoding with a KV cache (`Transformer.decode`, used by minillm_jax.model.generation): the same
parameters and the same per-token computation, but each attention layer keeps its keys and values
(after qk_norm and RoPE) in the "cache" collection, stacked over layers like the parameters:
    cache/blocks/attn/key, cache/blocks/attn/value (n, B, sequence_length, nh, hs), compute dtype.
`decode(idx (B, T), start)` embeds the tokens at positions start .. start+T-1 (wpe rows / RoPE
angles of those positions), writes their keys/values into cache rows start .. start+T-1 and lets
query start+i attend to cache rows <= start+i (a mask over the whole cache length; rows past the
filled prefix are never read). Prefill is decode(prompt, 0) (rows past the prompt may hold
padding, which later steps overwrite before any query can see them), then decode(token, pos) once
per token; start + T <= sequence_length is the caller's to keep (minillm_jax.model.generation slides the
window by recomputing it). MoE, weighted_residual and unet_skips need nothing extra: they act on
each token on its own (capacity-limited MoE excepted, see minillm_jax.model.generation). With
attention_window the cache mask is banded too: query start+i sees rows (start+i-window, start+i].
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from minillm_jax.config import ExecutionConfig, ModelConfig
from minillm_jax.model.layers import SAVED_ACTIVATIONS, MLP, Attention, make_norm, normal_init
from minillm_jax.model.precision import compute_dtype, einsum_f32
from minillm_jax.model.token_embedding_options import (
    Smear, ValueEmbeddings, layer_value_embedding, value_embedding_xs)

Array = jax.Array

__all__ = ["ExecutionConfig", "Features", "ModelConfig", "Transformer", "abstract_params",
           "build_model", "count_params", "head_logits", "init_params", "num_params"]


def _sublayer_types() -> dict[str, type[nn.Module]]:
    """Block sublayer kinds (config.block_pattern) -> module. A new kind is a module taking
    (cfg, execution, train) and mapping (B, T, C) -> (B, T, C), or -> ((B, T, C), stats) for
    layers with auxiliary losses (see minillm_jax.model.moe.MoE), registered here and named in
    config.SUBLAYER_KINDS."""
    from minillm_jax.model.moe import MoE

    return {"attn": Attention, "mlp": MLP, "moe": MoE}


class Block(nn.Module):
    """Pre-norm block: x + attn(ln_1(x)), then x + mlp(ln_2(x)) (or cfg.block_pattern's sublayers).
    Scan-shaped: (carry, xs) -> (carry, stats), stats the summed MoE statistics of its sublayers
    ({} without MoE).

    decode=True (KV-cache decoding): carry = (that carry, start), start the position of the
    first token, handed to the attention sublayers and carried through unchanged.

    Plain residual: carry = x (B, T, C), xs = None or a dict of per-layer values: "windowed",
    the layer's sliding-window flag, when cfg.windowed_layers mixes windowed and full layers;
    "value_embed" = (table index, flag) of the layer with value_embeddings, whose (K, B, T, C)
    lookups of all tables come as `value_embeds` (the same for every layer: broadcast).
    weighted_residual: carry = the (n+1, B, T, C) running inputs `acc` (row r: the weighted sum,
    so far, that becomes the input of block r+1 / ln_f), xs["dense"] = (column (n+1,), layer
    index l): the block reads its input acc[l], computes h_{l+1}, and adds column[r] * h_{l+1} to
    every row r (column[r] = w[r-1, l+1], 0 for r <= l). unet_skips: carry = (x, skips), skips
    (n//2 + 1, B, T, C) the saved encoder outputs (last row a sink), xs["unet"] = (weight, read,
    write): x += weight * skips[read] (weight 0 outside the decoder half), the sublayers, then
    skips[write] = x (`_unet_skip_stack`). The sublayers are the `sublayers` method, which
    stacked_blocks remats on its own with unet_skips, so that the skips are not saved per layer.
    """

    cfg: ModelConfig
    execution: ExecutionConfig
    train: bool
    decode: bool = False

    @nn.compact
    def __call__(self, carry: Any, xs: Any = None, value_embeds: Array | None = None,
                 ) -> tuple[Any, dict[str, Array]]:
        if self.decode:
            carry, start = carry
            out, stats = self._block(carry, xs, value_embeds, start)
            return (out, start), stats
        return self._block(carry, xs, value_embeds, None)

    def _block(self, carry: Any, xs: Any, value_embeds: Array | None, start: Array | None,
               ) -> tuple[Any, dict]:
        cfg = self.cfg
        xs = xs or {}
        windowed = xs.get("windowed", True)
        if cfg.weighted_residual:
            column, index = xs["dense"]
            x = jax.lax.dynamic_index_in_dim(carry, index, axis=0, keepdims=False)
        elif cfg.unet_skips:
            x, skips = carry
            weight, read, write = xs["unet"]
            skip = jax.lax.dynamic_index_in_dim(skips, read, axis=0, keepdims=False)
            x = x + weight.astype(x.dtype) * skip
        else:
            x = carry
        ve = (layer_value_embedding(value_embeds, xs["value_embed"])
              if cfg.value_embeddings else None)
        x, stats = self.sublayers(x, start, windowed, ve)
        if cfg.weighted_residual:
            return carry + column.astype(carry.dtype)[:, None, None, None] * x[None], stats
        if cfg.unet_skips:
            return (x, jax.lax.dynamic_update_index_in_dim(skips, x, write, axis=0)), stats
        return x, stats

    def sublayers(self, x: Array, start: Array | None, windowed: Array | bool,
                  value_embed: Array | None = None) -> tuple[Array, dict]:
        """The block proper: block input (B, T, C) -> block output h, summed MoE statistics."""
        cfg = self.cfg
        types = _sublayer_types()
        stats: dict[str, Array] = {}
        for i, (kind, name) in enumerate(cfg.sublayers):
            h = make_norm(cfg, self.execution, f"ln_{i + 1}")(x)
            layer = types[kind](cfg, self.execution, self.train, name=name)
            out = layer(h, start, windowed, value_embed) if kind == "attn" else layer(h)
            if isinstance(out, tuple):  # a layer with statistics (MoE)
                out, layer_stats = out
                stats = {k: stats[k] + v if k in stats else v for k, v in layer_stats.items()}
            x = x + out.astype(x.dtype)  # the residual stream keeps its own dtype
            if i < len(cfg.sublayers) - 1:
                x = checkpoint_name(x, SAVED_ACTIVATIONS["residual stream"])
        return x, stats


def _is_fused_attention_forward(primitive: Any, *avals: Any, **params: Any) -> bool:
    """A remat policy that saves the outputs of cuDNN fused attention's forward (its output and
    softmax statistics, which its backward needs). Checkpoint names cannot reach them: they are
    made inside jax.nn.dot_product_attention's own custom VJP, so the policy names the primitive
    (`dot_product_attention_fwd_wrapper` in jax 0.10). Without it a remat policy recomputes
    the whole fused forward in the backward pass."""
    return primitive.name.startswith("dot_product_attention_fwd")


REMAT_POLICIES = {
    "full": None,  # save nothing, recompute the whole block
    "save_dots": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    # one copy of each activation the backward pass needs, recompute the elementwise rest
    # (minillm_jax/model/layers.py SAVED_ACTIVATIONS; docs/performance.md has the numbers)
    "save_named": jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.save_only_these_names(*SAVED_ACTIVATIONS.values()),
        _is_fused_attention_forward),
}


def stacked_blocks(cfg: ModelConfig, execution: ExecutionConfig,
                   block_cls: type[nn.Module] = Block, decode: bool = False) -> type[nn.Module]:
    """`block_cls` repeated n_layer times with parameters (and the KV cache) stacked on axis 0.

    scan_layers=False unrolls the loop completely (same parameters, bigger program): useful to
    compare speed or to step through layers; compile time then grows with depth. decode=True
    (no gradients) leaves out remat.
    """
    if execution.remat != "none" and not decode:
        # unet_skips: remat only the sublayers, whose input is x alone; rematting the whole
        # block would save its input carry, skips included, at every layer (O(n^2) memory)
        block_cls = nn.remat(block_cls, prevent_cse=False,
                             policy=REMAT_POLICIES[execution.remat],
                             methods=["sublayers"] if cfg.unet_skips else None)
    return nn.scan(
        block_cls,
        variable_axes={"params": 0, "cache": 0},
        split_rngs={"params": True, "dropout": True},
        length=cfg.n_layer,
        unroll=1 if execution.scan_layers else cfg.n_layer,
        # value_embeddings: the lookups of all tables go to every layer (Block docstring)
        **({"in_axes": (0, nn.broadcast)} if cfg.value_embeddings else {}),
    )


class LMHead(nn.Module):
    """Untied output projection, stored (C, V) like a Dense kernel."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self) -> Array:
        """The output matrix as (V, C), like the tied embedding."""
        kernel = self.param("kernel", normal_init(self.cfg.init_std),
                            (self.cfg.n_embd, self.cfg.vocab_size), jnp.float32)
        return kernel.T


class Features(NamedTuple):
    """What the model computes before the output layer, for losses that fuse it
    (minillm_jax.model.losses): final normed hidden states (B, T, C) in the compute dtype, the float32
    output matrix (V, C), the weighted auxiliary loss to add to the objective (0 without MoE)
    and per-layer-mean MoE statistics ({} without MoE)."""

    hidden: Array
    head: Array
    aux_loss: Array
    stats: dict[str, Array]


def head_logits(hidden: Array, head: Array, softcap: float = 0.0) -> Array:
    """Float32 logits (B, T, V) of hidden states (B, T, C) and the output matrix (V, C); the
    matmul runs in the hidden states' dtype with float32 accumulation, its gradient matmuls too
    (minillm_jax.model.precision). softcap > 0 bounds them smoothly: softcap * tanh(logits / softcap)
    (Gemma 2, modded-nanogpt)."""
    logits = einsum_f32("btc,vc->btv", hidden, head.astype(hidden.dtype))
    return softcap * jnp.tanh(logits / softcap) if softcap > 0 else logits


class Transformer(nn.Module):
    """Token ids (B, T) -> float32 logits (B, T, V); `features` stops before the output layer."""

    cfg: ModelConfig
    execution: ExecutionConfig = ExecutionConfig()

    def __call__(self, idx: Array, train: bool = False) -> Array:
        features = self.features(idx, train)
        return head_logits(features.hidden, features.head, self.cfg.logit_softcap)

    def decode(self, idx: Array, start: Array) -> Features:
        """KV-cache step (module docstring): features of tokens (B, T) at positions
        start .. start+T-1, attending to the cached keys/values of positions < start and to
        each other causally; updates the "cache" collection (apply with mutable=["cache"]; the
        first call creates it, zero-filled). start + T <= sequence_length."""
        return self.features(idx, False, jnp.asarray(start, jnp.int32))

    @nn.compact
    def features(self, idx: Array, train: bool = False, start: Array | None = None) -> Features:
        """Hidden states, output matrix and auxiliary losses of token ids (B, T), T <= the
        position table (callers check: minillm_jax.config.check_sequence_fits). `start`: the
        KV-cache decode mode of `decode`."""
        cfg, dtype = self.cfg, compute_dtype(self.execution)
        t = idx.shape[1]
        decode = start is not None
        embed = lambda n, name: nn.Embed(  # noqa: E731
            n, cfg.n_embd, embedding_init=normal_init(cfg.init_std), param_dtype=jnp.float32,
            name=name)
        wte = embed(cfg.vocab_size, "wte")
        x = wte(idx)
        if cfg.model == "gpt":
            wpe = embed(cfg.sequence_length, "wpe")
            if start is None:  # positions 0..t-1: a slice (XLA:CPU runs the gather unvectorised)
                x = x + wpe.embedding[:t][None].astype(x.dtype)
            else:
                x = x + wpe(start + jnp.arange(t))[None]
        if cfg.smear:
            x = Smear(cfg, dtype, name="smear")(x, start)
        residual = jnp.dtype(self.execution.residual_dtype)
        x = nn.Dropout(cfg.dropout, deterministic=not train)(x).astype(residual)
        blocks = stacked_blocks(cfg, self.execution, decode=decode)(
            cfg, self.execution, train, decode, name="blocks")
        shared, xs = (), {}
        if cfg.value_embeddings:
            shared = (ValueEmbeddings(cfg, dtype, name="value_embeds")(idx),)
            xs["value_embed"] = value_embedding_xs(cfg)
        if cfg.attention_window > 0 and not all(cfg.windowed_layers):
            xs["windowed"] = jnp.asarray(cfg.windowed_layers)
        run = ((lambda carry, xs: blocks(carry, xs, *shared)) if not decode else
               (lambda carry, xs: _drop_start(blocks((carry, start), xs, *shared))))
        if cfg.weighted_residual:
            x, stats = self._weighted_residual_stack(run, x, xs)
        elif cfg.unet_skips:
            x, stats = self._unet_skip_stack(run, x, xs)
        else:
            x, stats = run(x, xs or None)
        x = make_norm(cfg, self.execution, "ln_f")(x).astype(dtype)
        head = wte.embedding if cfg.tie_embeddings else LMHead(cfg, name="lm_head")()
        aux_loss, stats = _moe_objective(cfg, stats)
        return Features(x, head, aux_loss, stats)

    def _weighted_residual_stack(self, blocks: Any, h0: Array, xs: dict) -> tuple[Array, dict]:
        """DenseFormer: the input of block r+1 (and of ln_f for r = n) is sum_{j<=r} w[r-1, j] h_j.

        Carried as n+1 running sums (push form) rather than a buffer of block outputs (pull form):
        with the buffer, autodiff of the scan saves the whole (n+1, B, T, C) buffer at every layer
        (O(n^2) activations); here each layer's update is acc + column * h, whose derivative only
        needs h and the column, so memory stays O(n) like the plain network (the running sums
        cost n+1 activations, as a buffer would). FLOPs: O(n^2 BTC) adds, as in DenseFormer.
        """
        n = self.cfg.n_layer

        def init_identity(_, shape, dtype):
            return jnp.eye(shape[0], shape[1], k=1, dtype=dtype)  # w[r-1, r] = 1

        weights = self.param("residual_weights", init_identity, (n, n + 1), jnp.float32)
        rows = jnp.arange(1, n + 1)[:, None]
        weights = jnp.where(jnp.arange(n + 1)[None, :] <= rows, weights, 0.0)  # j <= r
        start = jnp.concatenate([jnp.ones((1,), jnp.float32), weights[:, 0]])  # acc[0] = h_0
        acc = start.astype(h0.dtype)[:, None, None, None] * h0[None]
        columns = jnp.concatenate([jnp.zeros((n, 1), jnp.float32), weights[:, 1:].T], axis=1)
        acc, stats = blocks(acc, {**xs, "dense": (columns, jnp.arange(n))})
        return acc[n], stats

    def _unet_skip_stack(self, blocks: Any, h0: Array, xs: dict) -> tuple[Array, dict]:
        """U-net skips (modded-nanogpt, Oct-Nov 2024 records): with m = n//2 pairs, the output
        h_{i+1} of block i < m, times a learned scalar unet_skip_weights[i], is added to the
        input of block n-1-i (and so stays in the residual stream after it). For even n the
        middle pair adds block m-1's output to itself: x = (1 + w) h_m, as modded-nanogpt does.
        It is the sparse DenseFormer x_r = h_r + w * h_{n-r}, but with one read and one write
        per block rather than DenseFormer's n+1 running sums.

        Initialised to zero, so that at init the model is exactly the plain network (and
        unet_skips=False's parameters plus zeros give the same logits); modded-nanogpt
        initialises its skip_weights to ones.

        Carried as (x, skips): skips (m+1, B, T, C) in the residual dtype holds the encoder
        outputs, row m a sink that the other blocks write to (its reads have weight 0). Per
        block: one (B, T, C) slice read, one multiply-add and one in-place row write; memory:
        the m+1 skip rows, plus one (B, T, C) per layer that the backward pass keeps for the
        weight's gradient (the slice read).
        """
        n = self.cfg.n_layer
        m = n // 2
        weights = self.param("unet_skip_weights", nn.initializers.zeros, (m,), jnp.float32)
        layers = jnp.arange(n)
        decoder = layers >= n - m
        pair = jnp.where(decoder, n - 1 - layers, m)  # the skip row block l reads
        weight = jnp.where(decoder, jnp.concatenate([weights, jnp.zeros((1,))])[pair], 0.0)
        write = jnp.minimum(layers, m)  # encoder blocks keep their output, the rest: the sink
        skips = jnp.zeros((m + 1,) + h0.shape, h0.dtype)
        (x, _), stats = blocks((h0, skips), {**xs, "unet": (weight, pair, write)})
        return x, stats


def _drop_start(out: tuple[tuple[Array, Array], dict]) -> tuple[Array, dict]:
    """((carry, start), stats) of the decode-mode blocks -> (carry, stats)."""
    (carry, _), stats = out
    return carry, stats


def _moe_objective(cfg: ModelConfig, stats: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
    """(weighted auxiliary loss, logged statistics) from the per-layer stacked MoE statistics."""
    if not stats:
        return jnp.zeros((), jnp.float32), {}
    from minillm_jax.model.moe import summarize_stats

    return summarize_stats(stats, cfg)


def build_model(cfg: ModelConfig, execution: ExecutionConfig | None = None) -> Transformer:
    return Transformer(cfg, execution if execution is not None else ExecutionConfig())


def init_params(model: Transformer, rng: Array) -> dict:
    """Fresh float32 parameters (llm-baselines' init), compiled (eager init dispatches op by op)."""
    idx = jnp.zeros((1, min(8, model.cfg.sequence_length)), jnp.int32)
    return jax.jit(lambda key: model.init({"params": key}, idx, train=False)["params"])(rng)


def abstract_params(model: Transformer) -> dict:
    """Parameter shapes and dtypes without allocating them."""
    return jax.eval_shape(lambda rng: init_params(model, rng), jax.random.key(0))


def count_params(params: Any) -> int:
    return int(sum(math.prod(p.shape) for p in jax.tree.leaves(params)))


def num_params(params: Any, cfg: ModelConfig) -> int:
    """llm-baselines' get_num_params(): unique parameters, minus wpe for GPT."""
    total = count_params(params)
    if cfg.model == "gpt":
        total -= count_params(params["wpe"])
    return total
