"""Contrastive training of an embedding model: InfoNCE (van den Oord et al. 2018; Karpukhin et al.
2020's in-batch negatives; Henderson et al. 2017's "multiple negatives ranking").

Each text becomes one vector (`pooling` over the last hidden states, then L2-normalised), and each
anchor a_i must pick its own positive p_i among every candidate of the batch: all B positives (the
other rows' positives are its in-batch negatives) and the M hard negatives n_j the rows carry:

    s(x, y) = cos(x, y) / tau
    loss_i  = -log( exp s(a_i, p_i) / (sum_j exp s(a_i, p_j) + sum_m exp s(a_i, n_m)) )
    symmetric: loss_i = (loss_i + loss'_i) / 2,  loss'_i = -log softmax_j s(p_i, a_j) [i]

sentence-transformers' MultipleNegativesRankingLoss is the same loss with scale = 1 / tau (its
default 20 is tau = 0.05), averaged instead of summed.

Micro-batches. The loss is summed over anchors and the loop divides by the anchors of the whole
accumulated batch, but an anchor only sees the candidates of its own micro-batch: 4 micro-batches
of 2 give each anchor 1 in-batch negative, 1 batch of 8 gives it 7. The two are different losses
(each micro-batch's is a larger sum of easier terms), unlike token-level objectives where gradient
accumulation is exact. Two ways to keep the whole batch's negatives:

- `cache_chunk: k` with micro_batch_size = batch_size (GradCache, Gao et al. 2021; sentence-
  transformers' CachedMultipleNegativesRankingLoss): every text is embedded k rows at a time without
  keeping activations, the loss and its gradient with respect to the embeddings are computed on the
  whole batch, and backward re-runs each chunk (with the dropout it had) to carry that gradient into
  the weights. Memory of k rows' activations, the loss and gradients of the full batch; one extra
  forward per step.
- several processes: each rank's embeddings are gathered (differentiably) so every anchor's
  candidates are the positives and negatives of all ranks (`gather_across_ranks`).

Pooling: `mean` over the real tokens (sentence-transformers' default, what all-MiniLM-L6-v2 uses),
`cls` the first token (BERT's [CLS]), `last` the last real token (a decoder: the only position that
has read the whole text). Texts are encoded as the tokenizer encodes them (its own special tokens,
no chat template), which is what SentenceTransformer(path).encode does with an exported folder.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from tunewright.data.packing import collate_padded
from tunewright.data.types import Encoded
from tunewright.errors import ConfigError, DataError
from tunewright.sections import Section

__all__ = ["Config", "HEAD", "FORMATS", "TEMPLATED", "PACKABLE", "UNIT", "METRICS", "OUTPUTS", "misfit", "encode",
           "collate", "count", "end_ids", "render", "loss", "eval_metrics", "pool", "embed", "info_nce",
           "cached_embeddings", "POOLINGS"]

HEAD = "embedding"
FORMATS = ("pairs",)
TEMPLATED = False  # texts as the tokenizer encodes them, as SentenceTransformer.encode does
PACKABLE = False  # one text per row: pooling reads the row
UNIT = "pairs"
METRICS = {"accuracy": "mean"}  # anchors whose own positive scores highest among the micro-batch's candidates
OUTPUTS = ("anchors", "positives")  # every evaluation row's embeddings: recall@k and MRR over the whole set
POOLINGS = ("mean", "cls", "last")


class Config(Section):
    name: Literal["contrastive"] = Field("contrastive", description=(
        "Contrastive training of an embedding model (InfoNCE): each anchor's positive against the batch's other "
        "positives and the hard negatives."))
    temperature: float = Field(0.05, gt=0, description=(
        "tau: similarities are cos / tau (sentence-transformers' scale = 1 / tau; its default scale 20 is 0.05)."))
    pooling: Literal["mean", "cls", "last"] = Field("mean", description=(
        "One vector per text: mean over the real tokens, the first token (cls), or the last real token (last: "
        "for decoder models)."))
    normalize: bool = Field(True, description="L2-normalise the vectors (cosine similarity); off: dot product.")
    symmetric: bool = Field(False, description=(
        "Also pick each positive's anchor among the batch's anchors, and average the two losses."))
    cache_chunk: int | None = Field(None, gt=0, description=(
        "Embed this many rows at a time without keeping activations and re-run them in backward (GradCache): "
        "with micro_batch_size = batch_size every anchor sees the whole batch's negatives at the memory of a "
        "chunk. Single process only."))
    gather_across_ranks: bool = Field(True, description=(
        "With several processes, every anchor's candidates are the positives and negatives of all ranks."))


def misfit(run_cfg) -> str | None:
    """Texts go in plain: no template, system prompt or generation metrics."""
    for key in ("template", "system_prompt", "train_on_inputs"):
        if getattr(run_cfg.data, key):
            return f"data.{key}: not used by objective 'contrastive' (texts are embedded as they are); remove it"
    if run_cfg.eval.metrics or run_cfg.eval.labels:
        key = "metrics" if run_cfg.eval.metrics else "labels"
        return (f"eval.{key}: the contrastive objective reports eval_recall@1/5/10 and eval_mrr over the evaluation "
                f"rows at each evaluation; remove eval.{key}")
    return None


# ---------------------------------------------------------------- rows

def encode(example, tokenizer, template: str, data_cfg):
    """A pairs row -> Encoded: the anchor's ids, the positive's (and negative's) in meta."""
    if not example.segments or len(example.segments) < 2:
        raise DataError(example.source, example.line, None, "not a text pair (use data format pairs)")
    ids = [list(tokenizer(s.text, add_special_tokens=True)["input_ids"]) for s in example.segments]
    meta: dict = {}
    if any(len(x) > data_cfg.cutoff_len for x in ids):
        if data_cfg.truncation == "drop":
            return "too_long"
        ids, meta["truncated"] = [list(tokenizer(s.text, add_special_tokens=True, truncation=True,
                                                 max_length=data_cfg.cutoff_len)["input_ids"])
                                  for s in example.segments], True
    meta["positive"] = ids[1]
    if len(ids) > 2:
        meta["negative"] = ids[2]
    return Encoded(ids[0], [], example.source, example.line, meta)


def collate(rows: list, pad_id: int, packed: bool) -> dict:
    """B rows -> input_ids/attention_mask [2B + M, T]: the B anchors, the B positives, then the M hard
    negatives of the rows that have one (padded on the right); `pairs` = B."""
    encoded = [r[0] for r in rows]
    texts = ([e.input_ids for e in encoded] + [e.meta["positive"] for e in encoded]
             + [e.meta["negative"] for e in encoded if "negative" in e.meta])
    batch = collate_padded([Encoded(t, [0] * len(t)) for t in texts], pad_id)
    del batch["labels"]
    batch["pairs"] = len(encoded)
    batch["num_tokens"] = int(batch["attention_mask"].sum())
    return batch


def count(batch: dict) -> int:
    return int(batch["pairs"])


def end_ids(tokenizer, template: str) -> list[int]:
    return []  # an embedding model does not generate


def render(encoded, tokenizer) -> str:
    parts = [("anchor", encoded.input_ids), ("positive", encoded.meta["positive"])]
    parts += [("negative", encoded.meta["negative"])] if "negative" in encoded.meta else []
    return "\n".join(f"{name}: {tokenizer.decode(ids, skip_special_tokens=False)}" for name, ids in parts)


# ---------------------------------------------------------------- embeddings

def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """[N, d] from last hidden states [N, T, d] and the attention mask [N, T] (either padding side)."""
    if how == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    if how == "cls":
        first = mask.argmax(-1)  # the leftmost real token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = (positions * mask).argmax(-1)  # the rightmost real token
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def embed(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, pooling: str = "mean",
          normalize: bool = True) -> torch.Tensor:
    """[N, d] fp32 vectors of N texts through a base model (AutoModel, or its PEFT wrapper)."""
    out = model(input_ids=input_ids, attention_mask=attention_mask)
    vectors = pool(out.last_hidden_state, attention_mask, pooling).float()
    pooler = getattr(out, "pooler_output", None)
    if pooler is not None and torch.is_grad_enabled():
        # BERT's pooler (dense + tanh over [CLS]) is no part of the embedding; a zero term keeps its
        # weights in the graph, because DDP waits for a gradient of every trainable weight
        vectors = vectors + 0 * pooler.float().sum()
    return F.normalize(vectors, dim=-1) if normalize else vectors


def _rng_state(device: torch.device) -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


@contextmanager
def _replayed(state: tuple, device: torch.device):
    """The random state `state` for the block (dropout masks as they were), the caller's restored after."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], device)
        yield


class _CachedEmbeddings(torch.autograd.Function):
    """Embeddings of chunks computed without a graph; backward re-runs each chunk with the random state
    it had and returns the weights' gradient (sum over chunks of J_chunk^T dL/d embeddings)."""

    @staticmethod
    def forward(ctx, run, chunks, device, *params):
        ctx.run, ctx.chunks, ctx.device = run, chunks, device
        ctx.states = []
        outs = []
        for chunk in chunks:
            ctx.states.append(_rng_state(device))
            outs.append(run(*chunk))
        ctx.save_for_backward(*params)
        return torch.cat(outs)

    @staticmethod
    def backward(ctx, grad):
        params = ctx.saved_tensors
        total: list = [None] * len(params)
        start = 0
        for chunk, state in zip(ctx.chunks, ctx.states):
            with torch.enable_grad(), _replayed(state, ctx.device):
                out = ctx.run(*chunk)
            part = torch.autograd.grad(out, params, grad[start:start + out.shape[0]], allow_unused=True)
            start += out.shape[0]
            total = [t if p is None else p if t is None else t + p for t, p in zip(total, part)]
        return (None, None, None, *total)


def cached_embeddings(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, chunk: int, pooling: str,
                      normalize: bool) -> torch.Tensor:
    """`embed` of every row, `chunk` rows at a time, holding no activations between forward and backward."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params or not torch.is_grad_enabled():
        return torch.cat([embed(model, input_ids[i:i + chunk], attention_mask[i:i + chunk], pooling, normalize)
                          for i in range(0, input_ids.shape[0], chunk)])
    chunks = [(input_ids[i:i + chunk], attention_mask[i:i + chunk]) for i in range(0, input_ids.shape[0], chunk)]

    def run(ids, mask):
        return embed(model, ids, mask, pooling, normalize)

    return _CachedEmbeddings.apply(run, chunks, input_ids.device, *params)


# ---------------------------------------------------------------- the loss

def info_nce(anchors: torch.Tensor, candidates: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """[B] per-anchor losses: -log softmax(anchors @ candidates^T / tau)[i, targets[i]]."""
    scores = anchors @ candidates.T / temperature
    return F.cross_entropy(scores, targets, reduction="none")


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _gather(x: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's rows of `x` (any row count per rank), differentiable: the gradient of another rank's
    rows goes back to that rank (all_gather's backward sums the gradients onto their owner)."""
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_gather

    world, _ = _world()
    sizes = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.zeros_like(sizes) for _ in range(world)]
    dist.all_gather(counts, sizes)
    counts = [int(c) for c in counts]
    padded = torch.cat([x, x.new_zeros(max(counts) - x.shape[0], *x.shape[1:])])
    return [part[:n] for part, n in zip(all_gather(padded), counts)]


def _candidates(anchors, positives, negatives, gather: bool):
    """(candidates, target index of each anchor's positive, every rank's anchors): this rank's rows
    alone, or all ranks' (the positives of every rank first, then the negatives)."""
    world, rank = _world()
    own = torch.arange(anchors.shape[0], device=anchors.device)
    if not gather or world == 1 or not torch.is_grad_enabled():
        # evaluation: ranks hold different numbers of batches, so no collective may run there
        return torch.cat([positives, negatives]), own, anchors
    pos, neg, anc = _gather(positives), _gather(negatives), _gather(anchors)
    offset = sum(p.shape[0] for p in pos[:rank])
    return torch.cat(pos + neg), own + offset, torch.cat(anc)


def loss(model, batch: dict, cfg: Config, state=None) -> tuple[torch.Tensor, dict]:
    """Summed InfoNCE over the batch's anchors, the number whose positive ranks first, and the
    anchors' and positives' vectors (for the evaluation's retrieval metrics)."""
    ids, mask, b = batch["input_ids"], batch["attention_mask"], int(batch["pairs"])
    if cfg.cache_chunk:
        if _world()[0] > 1:
            raise ConfigError("objective.cache_chunk: not supported with several processes (gather_across_ranks "
                              "already gives every anchor all ranks' negatives); remove cache_chunk")
        vectors = cached_embeddings(model, ids, mask, cfg.cache_chunk, cfg.pooling, cfg.normalize)
    else:
        vectors = embed(model, ids, mask, cfg.pooling, cfg.normalize)
    anchors, positives, negatives = vectors[:b], vectors[b:2 * b], vectors[2 * b:]
    candidates, targets, all_anchors = _candidates(anchors, positives, negatives, cfg.gather_across_ranks)
    rows = info_nce(anchors, candidates, targets, cfg.temperature)
    if cfg.symmetric:
        backward = info_nce(positives, all_anchors, targets, cfg.temperature)
        rows = (rows + backward) / 2
    with torch.no_grad():
        hits = ((anchors @ candidates.T).argmax(-1) == targets).sum()
    return rows.sum(), {"accuracy": hits.float(), "anchors": anchors.detach(), "positives": positives.detach()}


def eval_metrics(outputs: dict, cfg: Config) -> dict:
    """Recall@1/5/10 and MRR of every evaluation anchor against every evaluation positive."""
    from tunewright.eval.retrieval import rank_of_relevant, retrieval_metrics

    anchors, positives = outputs["anchors"].float(), outputs["positives"].float()
    ranks = rank_of_relevant(anchors @ positives.T, torch.arange(anchors.shape[0]))
    return retrieval_metrics(ranks)
