"""What the RL objectives (ppo.py, grpo.py, rloo.py) share: prompts in, a rollout of sampled answers
out, and the clipped policy-gradient loss over it. Each of the three supplies only its Config and
its advantages (GAE with a value head; group-normalized; leave-one-out).

The loop's hooks (objectives/__init__.py) carry it, with no second loop:

    steps_per_batch(cfg) = ppo_epochs x minibatches    the loop gives each plan batch of prompts to
                                                      that many consecutive optimizer steps
    refresh(model, step, batches, cfg, state)         at the first of them, sample a rollout from the
                                                      batch's prompts; at every one, return this step's
                                                      minibatch of it (split into the step's micro-batches)

A rollout is the step's `train.batch_size` prompts, each answered `group_size` times (ppo: once):
B x k answers, cut into `minibatches` minibatches (each one optimizer step), passed over
`ppo_epochs` times in a fresh seeded order each time. Sampling draws from the run's torch RNG,
seeded with train.seed and saved in every checkpoint; the rollout itself (token ids, log-probs,
values, rewards, advantages) is saved beside the weights as safetensors (`save_state`), so a resume
inside a rollout's steps continues bit for bit.

Per answer token t, with log-probs at temperature τ (logits / τ, as TRL scores them), ρ_t =
π(y_t)/π_old(y_t) and advantage A_t:

    policy loss   max(-A_t ρ_t, -A_t clip(ρ_t, 1-ε, 1+ε))          ε = cliprange (Schulman et al. 2017)
    KL estimate   k1 = log π - log π_ref;  k3 = e^(log π_ref - log π) - 1 - (log π_ref - log π)
                  (Schulman's estimators; k3 >= 0 per token)

Token losses are weighted so that the loop's division by the step's rows gives the normalization
the config names (`NORMALIZERS`). Answers end at the first end-of-turn/EOS token (kept, scored);
positions after it are padding and carry nothing.

One process only: the rollout buffer lives on the process that sampled it.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch.utils.checkpoint import checkpoint

from tunewright.data import tokenize
from tunewright.data.types import IGNORE_INDEX, Encoded
from tunewright.errors import ConfigError
from tunewright.objectives import pairs, rewards
from tunewright.objectives.causal_lm import hidden_states, split_head
from tunewright.objectives.rewards import RewardSource
from tunewright.sections import Section

__all__ = ["RolloutConfig", "State", "SHARED", "HEAD", "FORMATS", "TEMPLATED", "PACKABLE", "UNIT", "NORMALIZERS",
           "BASE_METRICS", "encode", "collate", "count", "end_ids", "render", "misfit", "setup", "steps_per_batch",
           "refresh", "loss", "save_state", "load_state", "trainable", "kl_estimate", "clipped_policy_loss",
           "clipped_value_loss",
           "whiten", "answer_mask", "token_stats"]

HEAD = "causal_lm"
# conversation formats give their prompt (a trailing assistant answer is dropped); preference rows
# their prompt
FORMATS = ("prompt_completion", "alpaca", "messages", "sharegpt", "preference")
TEMPLATED = True
PACKABLE = False
UNIT = "rows"  # answers; token losses are weighted (NORMALIZERS) so that sum / rows is the wanted mean
# what ppo, grpo and rloo take from here as they are (each adds Config, METRICS, misfit, setup)
SHARED = ["HEAD", "FORMATS", "TEMPLATED", "PACKABLE", "UNIT", "encode", "collate", "count", "end_ids", "render",
          "steps_per_batch", "refresh", "loss", "save_state", "load_state", "trainable"]
BASE_METRICS = {"reward": "mean", "reward_std": "mean", "kl": "mean", "policy_loss": "mean",
                "clip_fraction": "mean", "entropy": "mean", "answer_length": "mean"}


class RolloutConfig(Section):
    """Settings every RL objective has (ppo, grpo and rloo add their own)."""

    rewards: list[RewardSource] = Field(default_factory=list, description=(
        "Reward sources, summed with their weights: `function: module:function` (called with the prompts and "
        "answers as strings) or `model: <classification run with one output>`."))
    max_new_tokens: int = Field(32, ge=1, description="Longest answer sampled, in tokens.")
    min_new_tokens: int = Field(0, ge=0, description="Shortest answer: end tokens are blocked before this many.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (log-probs are scored at it too).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling: keep the smallest set of tokens with "
                         "this much probability.")
    ppo_epochs: int = Field(1, ge=1, description="Passes over each rollout (GRPO's num_iterations).")
    minibatches: int = Field(1, ge=1, description=(
        "Optimizer steps per pass over a rollout: a rollout of train.batch_size prompts x group_size answers is cut "
        "into this many minibatches."))
    cliprange: float = Field(0.2, gt=0, description="Clip range ε of the probability ratio.")
    kl_estimator: Literal["k1", "k3"] = Field("k1", description=(
        "Per-token KL estimate to the reference: k1 = log π - log π_ref, k3 = e^-k1 - 1 + k1 (never negative)."))
    reward_clip: float | None = Field(None, gt=0, description="Clip each score to [-reward_clip, reward_clip].")
    reward_normalize: bool = Field(False, description="Whiten scores over each rollout (its own mean and std).")
    empty_answer_penalty: float | None = Field(None, description=(
        "Subtracted from the score of an answer with no token before its end."))
    missing_eos_penalty: float | None = Field(None, description=(
        "Subtracted from the score of an answer that max_new_tokens cut before its end token."))
    disable_dropout: bool = Field(True, description="Turn dropout off (sampling and scoring see one policy).")
    reference: Literal["adapter_disabled", "frozen_copy"] | None = Field(None, description=(
        "The KL anchor: `adapter_disabled` (the model with its adapter off; the default with adapter methods) or "
        "`frozen_copy` (a frozen copy of the starting model; the default otherwise)."))
    chunk_size: pairs.ChunkSize = pairs.CHUNK_SIZE


class State:
    """An RL run's objective state: the reference, the reward sources, the value head (ppo), the
    tokenizer's facts, the current rollout and the KL coefficient (adaptive with ppo)."""

    def __init__(self, reference, sources, tokenizer, end_ids: list[int], kl_coef: float, value_head=None,
                 advantages=None, kl_in_loss: bool = False):
        self.reference, self.sources, self.tokenizer, self.end_ids = reference, sources, tokenizer, end_ids
        self.kl_coef, self.value_head, self.advantages, self.kl_in_loss = kl_coef, value_head, advantages, kl_in_loss
        self.buffer: dict[str, torch.Tensor] | None = None
        self.window = -1  # which plan batch the buffer was sampled from (step // steps_per_batch)


# ---------------------------------------------------------------- data: prompts

def encode(example, tokenizer, template: str, data_cfg) -> Encoded | str:
    """A row -> its prompt tokens (the conversation up to the answer, plus the assistant header, as
    generate encodes it), cut on the left to data.max_prompt_len (or data.cutoff_len)."""
    messages = list(example.messages or [])
    if example.responses is None:  # a conversation format: its last answer is what the policy writes
        while messages and messages[-1].role == "assistant":
            messages.pop()
    if not messages:
        return "no_target"
    ids = tokenize.encode_prompt(messages, tokenizer, template, system_prompt=data_cfg.system_prompt)
    limit = data_cfg.max_prompt_len or data_cfg.cutoff_len
    meta = {"prompt": next((m.content for m in reversed(messages) if m.role == "user"), messages[-1].content)}
    if len(ids) > limit:
        ids, meta["truncated"] = ids[-limit:], True
    return Encoded(ids, [IGNORE_INDEX] * len(ids), example.source, example.line, meta)


def collate(rows: list, pad_id: int, packed: bool) -> dict:
    """B prompts -> their ids as lists (refresh pads them with the answers), texts and pad id."""
    encoded = [r[0] for r in rows]
    return {"prompt_ids": [e.input_ids for e in encoded], "prompts": [e.meta["prompt"] for e in encoded],
            "pad_id": pad_id, "num_tokens": sum(len(e.input_ids) for e in encoded)}


def count(batch: dict) -> int:
    """Answers in a rollout's micro-batch (prompts in a batch of the plan)."""
    return int(batch["rows"]) if "rows" in batch else len(batch["prompt_ids"])


end_ids = pairs.end_ids


def render(encoded: Encoded, tokenizer) -> str:
    return "prompt (the policy writes the answer):\n" + tokenizer.decode(encoded.input_ids)


def steps_per_batch(cfg) -> int:
    return cfg.ppo_epochs * cfg.minibatches


def misfit(run_cfg, group_size: int = 1) -> str | None:
    name = run_cfg.objective.name
    if not run_cfg.objective.rewards:
        return (f"objective.rewards: objective {name!r} needs at least one reward source "
                f"(function: module:function, or model: a reward model run)")
    if run_cfg.eval.steps or run_cfg.eval.at_start:
        return (f"eval.steps: objective {name!r} has no held-out loss (its loss needs a rollout); evaluate the "
                f"trained policy with `tunewright eval` or generate instead")
    if run_cfg.regularizers:
        return f"regularizers: not possible with objective {name!r} (their estimates read a loss over data rows)"
    train, m = run_cfg.train, run_cfg.objective.minibatches
    if (train.micro_batch_size * group_size) % m:
        return (f"objective.minibatches: a rollout is train.batch_size ({train.batch_size}) prompts x group_size "
                f"({group_size}) answers, cut into {m} minibatches (optimizer steps), each in "
                f"{train.batch_size // train.micro_batch_size} micro-batches: micro_batch_size x group_size "
                f"({train.micro_batch_size * group_size}) must be a multiple of minibatches")
    return None


# ---------------------------------------------------------------- setup, save, load

def setup(model, cfg, data, *, value_head: bool, advantages, kl_in_loss: bool) -> State:
    """Reference, reward sources and (ppo) a value head; `data` is the run's PreparedData, whose
    tokenizer and template decode answers and end them."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() and \
            torch.distributed.get_world_size() > 1:
        raise ConfigError(f"objective.name: {cfg.name} runs on one process for now (each process would sample its "
                          f"own rollout); launch it without torchrun/accelerate launch")
    if data is None or getattr(data, "tokenizer", None) is None:
        raise ConfigError(f"objective {cfg.name}: needs the run's tokenizer (PreparedData.tokenizer)")
    if cfg.disable_dropout:
        pairs.disable_dropout(model)
    device = next(model.parameters()).device
    head = None
    if value_head:
        _, out, _ = split_head(model)
        # nn.Linear's own initialization (as TRL's and trlX's value heads), drawn from the run's
        # seeded RNG; a resume then loads the trained head over it
        head = torch.nn.Linear(out.weight.shape[1], 1, device=device, dtype=torch.float32)
    return State(pairs.make_reference(model, cfg.reference), rewards.load_sources(cfg, device), data.tokenizer,
                 pairs.end_ids(data.tokenizer, data.template), getattr(cfg, "kl_coef", 0.0), head, advantages,
                 kl_in_loss)


def trainable(state: State) -> list:
    """Parameters the objective trains beside the model's (the value head)."""
    return list(state.value_head.parameters()) if state.value_head is not None else []


def save_state(state: State, path) -> None:
    """The rollout under way, the KL coefficient and the value head, as one safetensors file."""
    from safetensors.torch import save_file

    tensors = {f"buffer.{k}": v.clone() for k, v in (state.buffer or {}).items()}  # clones: no shared storage
    tensors["window"] = torch.tensor([state.window], dtype=torch.int64)
    tensors["kl_coef"] = torch.tensor([state.kl_coef], dtype=torch.float64)
    if state.value_head is not None:
        head = state.value_head.state_dict()
        tensors.update({f"value_head.{k}": v.detach().cpu().contiguous() for k, v in head.items()})
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "rollout.safetensors"))


def load_state(state: State, path) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(path / "rollout.safetensors"))
    buffer = {k[len("buffer."):]: v for k, v in tensors.items() if k.startswith("buffer.")}
    state.buffer = buffer or None
    state.window = int(tensors["window"][0])
    state.kl_coef = float(tensors["kl_coef"][0])
    if state.value_head is not None:
        state.value_head.load_state_dict({k[len("value_head."):]: v for k, v in tensors.items()
                                          if k.startswith("value_head.")})


# ---------------------------------------------------------------- formulas

def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token KL(π || π_ref) estimate from the sampled tokens' log-probs (module docstring)."""
    k1 = logp - ref_logp
    return k1 if estimator == "k1" else torch.expm1(-k1) + k1


def clipped_policy_loss(ratio: torch.Tensor, adv: torch.Tensor, cliprange: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(max(-A ρ, -A clip(ρ, 1-ε, 1+ε)) per token, whether the clipped term was the one taken)."""
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - cliprange, 1 + cliprange)
    return torch.maximum(unclipped, clipped), (clipped > unclipped).float()


def clipped_value_loss(values: torch.Tensor, old: torch.Tensor, returns: torch.Tensor, clip: float) -> torch.Tensor:
    """½ max((V - R)², (V_old + clip(V - V_old, ±clip) - R)²) per token."""
    v_clip = old + (values - old).clamp(-clip, clip)
    return 0.5 * torch.maximum((values - returns) ** 2, (v_clip - returns) ** 2)


def whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(x - mean) / sqrt(var + 1e-8) over the masked entries (unbiased variance, as TRL's
    masked_whiten); 0 outside the mask."""
    n = mask.sum()
    mean = (x * mask).sum() / n
    var = (((x - mean) ** 2) * mask).sum() / (n - 1).clamp(min=1)  # one entry: variance 0, not 0/0
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def _token_mean(mask: torch.Tensor, micro: int, cfg) -> torch.Tensor:
    return torch.full(mask.shape, mask.shape[0] / mask.sum().clamp(min=1).item()) * mask


def _micro_token_mean(mask: torch.Tensor, micro: int, cfg) -> torch.Tensor:
    rows = mask.shape[0] // micro
    out = torch.zeros(mask.shape)
    for i in range(micro):
        part = mask[i * rows:(i + 1) * rows]
        out[i * rows:(i + 1) * rows] = part * (mask.shape[0] / (part.sum().clamp(min=1).item() * micro))
    return out


def _sequence_mean(mask: torch.Tensor, micro: int, cfg) -> torch.Tensor:
    return mask / mask.sum(-1, keepdim=True).clamp(min=1)


def _constant(mask: torch.Tensor, micro: int, cfg) -> torch.Tensor:
    return mask / cfg.max_new_tokens


# token weights w [N, A] of a minibatch (N answers, `micro` micro-batches) so that Σ w l / N is:
NORMALIZERS = {
    "dapo": _token_mean,         # Σ l / (answer tokens of the minibatch)                  DAPO; ppo, rloo
    "bnpo": _micro_token_mean,   # mean over micro-batches of Σ l / (their answer tokens)  TRL's bnpo
    "grpo": _sequence_mean,      # mean over answers of their mean token loss              GRPO (Shao et al. 2024)
    "dr_grpo": _constant,        # Σ l / (N max_new_tokens)                                Dr. GRPO (Liu et al. 2025)
}


# ---------------------------------------------------------------- sampling and scoring

def answer_mask(answers: torch.Tensor, end: list[int]) -> torch.Tensor:
    """[N, A] 1 on each answer's tokens up to and including its first end token (all of them
    when it has none: max_new_tokens cut it)."""
    is_end = torch.isin(answers, torch.tensor(end, device=answers.device)) if end else torch.zeros_like(answers).bool()
    seen = is_end.long().cumsum(-1)
    # a token counts while no end came before it: the end token itself has seen == 1 and is kept
    return ((seen - is_end.long()) == 0).float()


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows, as transformers' generate computes them."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


def _chunk_stats(hidden, targets, head, softcap, temperature):
    logits = head(hidden).float()
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    logits = logits / temperature
    logz = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(1, targets[:, None]).squeeze(1) - logz
    entropy = logz - (logits.softmax(-1) * logits).sum(-1)
    return torch.stack([logp, entropy])


def token_stats(model, batch: dict, cfg, value_head=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(log-prob [N, A], entropy [N, A], value [N, A] or None) of each answer token of `batch`
    (input_ids/attention_mask [N, P + A], prompt width P), through `chunk_size` rows of the output
    projection at a time ([N, A, vocab] logits never exist)."""
    decoder, head, softcap = split_head(model)
    width = batch["input_ids"].shape[1] - batch["answer_mask"].shape[1]
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
              "position_ids": _positions(batch["attention_mask"])}
    hidden = hidden_states(model, inputs, decoder)[:, width - 1:-1]  # [N, A, d]: predicts answer token t
    n, a, d = hidden.shape
    flat, targets = hidden.reshape(n * a, d), batch["input_ids"][:, width:].reshape(-1)
    pieces = [(flat.sum() * 0).float().reshape(1, 1).expand(2, 0)]  # keeps backward reaching `hidden`
    for start in range(0, flat.shape[0], cfg.chunk_size):
        args = (flat[start:start + cfg.chunk_size], targets[start:start + cfg.chunk_size], head, softcap,
                cfg.temperature)
        pieces.append(checkpoint(_chunk_stats, *args, use_reentrant=False) if torch.is_grad_enabled()
                      else _chunk_stats(*args))
    stats = torch.cat(pieces, dim=1).view(2, n, a)
    values = value_head(hidden.float()).squeeze(-1) if value_head is not None else None
    return stats[0], stats[1], values


def _sample(model, prompt_ids: list[list[int]], pad_id: int, cfg, state: State) -> dict:
    """Sample one answer per prompt with the run's torch RNG; the rollout's token tensors."""
    device = next(model.parameters()).device
    width = max(len(p) for p in prompt_ids)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompt_ids], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids], device=device)
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=cfg.temperature,
                         top_p=cfg.top_p, top_k=0, max_new_tokens=cfg.max_new_tokens,
                         min_new_tokens=cfg.min_new_tokens or None, eos_token_id=state.end_ids, pad_token_id=pad_id)
    answers = out[:, width:]
    amask = answer_mask(answers, state.end_ids)
    return {"input_ids": torch.where(torch.cat([mask.bool(), amask.bool()], 1), out, pad_id),
            "attention_mask": torch.cat([mask, amask.long()], 1), "answer_mask": amask}


def _rollout(model, batches: list[dict], cfg, state: State, group_size: int) -> dict:
    """Sample, score and weigh a rollout from the prompts of `batches` (the step's micro-batches)."""
    tok = state.tokenizer
    prompt_ids = [p for b in batches for p in b["prompt_ids"] for _ in range(group_size)]
    prompts = [p for b in batches for p in b["prompts"] for _ in range(group_size)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            roll = _sample(model, prompt_ids, batches[0]["pad_id"], cfg, state)
            logp, _, values = token_stats(model, roll, cfg, state.value_head)
            ref_logp = state.reference(lambda m: token_stats(m, roll, cfg)[0])
    finally:
        model.train(was_training)
    amask = roll["answer_mask"]
    answers = roll["input_ids"][:, -amask.shape[1]:].cpu()
    lengths = amask.sum(-1).cpu()
    has_end = torch.isin(answers, torch.tensor(state.end_ids)).any(-1) if state.end_ids else \
        torch.zeros(len(answers), dtype=torch.bool)
    texts_out = [tok.decode(a[:int(n) - int(e)].tolist(), skip_special_tokens=True)
                 for a, n, e in zip(answers, lengths, has_end)]
    whole = [tok.decode(p + a[:int(n)].tolist()) for p, a, n in zip(prompt_ids, answers, lengths)]
    raw = rewards.score(state.sources, prompts, texts_out, whole)
    empty = lengths - has_end.long() == 0
    scores = rewards.shape(raw, cfg, empty, ~has_end)
    kl_tokens = kl_estimate(logp, ref_logp, cfg.kl_estimator) * amask
    roll.update(old_logps=logp, ref_logps=ref_logp, scores=scores.to(amask.device), reward=raw.to(amask.device),
                reward_std=torch.full_like(raw, raw.std().item() if raw.numel() > 1 else 0.0).to(amask.device),
                kl=kl_tokens.sum(-1), answer_length=lengths.float().to(amask.device))
    if values is not None:
        roll["values"] = values
    roll.update(state.advantages(roll, kl_tokens, cfg, state))
    # the order the rollout's passes take its answers in, drawn now from the run's RNG
    roll["order_seed"] = torch.randint(0, 2 ** 62, (1,))
    return {k: v.detach().cpu() for k, v in roll.items()}


def refresh(model, step: int, batches: list[dict], cfg, state: State) -> list[dict]:
    """The loop's hook: this step's micro-batches of the current rollout (sampled anew at the first
    step of each plan batch, `group_size` answers per prompt: 1 without that key, ppo)."""
    per_batch = steps_per_batch(cfg)
    window = step // per_batch
    if state.buffer is None or state.window != window:
        state.buffer, state.window = _rollout(model, batches, cfg, state, getattr(cfg, "group_size", 1)), window
    epoch, part = divmod(step - window * per_batch, cfg.minibatches)
    buf = state.buffer
    n = buf["input_ids"].shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(buf["order_seed"][0]) + epoch))
    size = n // cfg.minibatches
    rows = order[part * size:(part + 1) * size]
    micro = len(batches)
    weights = NORMALIZERS[getattr(cfg, "loss_type", "dapo")](buf["answer_mask"][rows], micro, cfg)
    # clip fraction and entropy are logged as token means whatever the loss's normalization, so
    # their curves compare across loss types
    token_weights = _token_mean(buf["answer_mask"][rows], micro, cfg)
    per = size // micro
    out = []
    for i in range(micro):
        take = rows[i * per:(i + 1) * per]
        mb = {k: v[take] for k, v in buf.items() if k != "order_seed"}
        mb["weights"], mb["token_weights"] = weights[i * per:(i + 1) * per], token_weights[i * per:(i + 1) * per]
        mb["rows"], mb["num_tokens"] = per, int(mb["attention_mask"].sum())
        out.append(mb)
    return out


def loss(model, batch: dict, cfg, state: State) -> tuple[torch.Tensor, dict]:
    """The weighted clipped policy loss (+ vf_coef x the clipped value loss with a value head,
    + kl_coef x the KL estimate when the KL is in the loss, GRPO's way), summed; metrics summed over rows."""
    logp, entropy, values = token_stats(model, batch, cfg, state.value_head)
    mask, w = batch["answer_mask"], batch["weights"] * batch["answer_mask"]
    tw = batch["token_weights"] * mask
    ratio = torch.exp(logp - batch["old_logps"])
    pg, clipped = clipped_policy_loss(ratio, batch["advantages"], cfg.cliprange)
    per_token = pg
    metrics = {"reward": batch["reward"].sum(), "reward_std": batch["reward_std"].sum(), "kl": batch["kl"].sum(),
               "policy_loss": (pg * w).sum().detach(), "clip_fraction": (clipped * tw).sum(),
               "entropy": (entropy.detach() * tw).sum(), "answer_length": batch["answer_length"].sum()}
    if values is not None:
        vf = clipped_value_loss(values, batch["values"], batch["returns"], cfg.cliprange_value)
        per_token = per_token + cfg.vf_coef * vf
        metrics["value_loss"] = (vf * w).sum().detach()
        metrics["kl_coef"] = torch.tensor(state.kl_coef * mask.shape[0], device=mask.device)  # each row carries β
    if state.kl_in_loss and cfg.kl_coef:
        per_token = per_token + cfg.kl_coef * kl_estimate(logp, batch["ref_logps"], cfg.kl_estimator)
    return (per_token * w).sum(), metrics
