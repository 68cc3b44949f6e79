"""`tunewright validate`: what the data will look like to the model, before any training.

Rows, tokens, truncated and dropped counts, the fraction of trained tokens, a length histogram,
packing efficiency, two rendered examples with the trained part marked (each objective renders its
own: `render_marked` for one sequence with a label mask, `render_seq2seq` for an encoder input and
a decoder target), and a warning when the end-of-turn/EOS token never carries loss (the model would
never learn to stop).
"""

from __future__ import annotations

from tunewright.data.packing import pack, packing_efficiency
from tunewright.data.types import IGNORE_INDEX, Encoded

__all__ = ["validation_report", "render_marked", "render_seq2seq", "eos_coverage"]

OPEN, CLOSE = "⟦", "⟧"  # around trained text in rendered examples


def render_marked(encoded: Encoded, tokenizer) -> str:
    """Decode an example, wrapping the tokens that carry loss in ⟦...⟧."""
    out, run, trained = [], [], None
    for tok, label in zip(encoded.input_ids, encoded.labels):
        is_trained = label != IGNORE_INDEX
        if trained is not None and is_trained != trained:
            out.append(_piece(run, trained, tokenizer))
            run = []
        run.append(tok)
        trained = is_trained
    if run:
        out.append(_piece(run, trained, tokenizer))
    return "".join(out)


def render_seq2seq(encoded: Encoded, tokenizer) -> str:
    """An encoder-decoder example: the encoder input [S] as is, the decoder target [T] inside ⟦...⟧.

    Its `labels` are the target sequence itself, not a mask over `input_ids`, so render_marked
    (which pairs them position by position) would mark encoder text as trained.
    """
    target = [t for t in encoded.labels if t != IGNORE_INDEX]
    return (f"input:  {tokenizer.decode(encoded.input_ids, skip_special_tokens=False)}\n"
            f"target: {OPEN}{tokenizer.decode(target, skip_special_tokens=False)}{CLOSE}")


def _drawn(meta: dict) -> str:
    """The phrasing and shots drawn for a row (data/phrasings.py), as `; phrasing 3, 2-shot (lines 4, 9)`."""
    parts = [f"phrasing {meta['phrasing']}"] if "phrasing" in meta else []
    if "shots" in meta:
        lines = ", ".join(map(str, meta.get("exemplars", [])))
        parts.append(f"{meta['shots']}-shot" + (f" (lines {lines})" if lines else ""))
    return "; " + ", ".join(parts) if parts else ""


def _piece(ids: list[int], trained: bool, tokenizer) -> str:
    text = tokenizer.decode(ids, skip_special_tokens=False)
    return f"{OPEN}{text}{CLOSE}" if trained else text


def eos_coverage(encoded: list[Encoded], stop_ids: list[int]) -> tuple[int, int]:
    """(examples whose labels contain an end-of-turn/EOS id, all examples)."""
    stops = set(stop_ids)
    return sum(any(label in stops for label in e.labels) for e in encoded), len(encoded)


def validation_report(data, tokenizer, template: str, new_token_ids: list[int], objective, data_cfg) -> str:
    """The report printed by `tunewright validate`: `data` (PreparedData) as `objective` encoded it
    with `tokenizer` and `template` (no model needed); `data_cfg` is the run's DataConfig."""
    lines = ["== data", *data.report]
    lengths = [len(e.input_ids) for e in data.train]
    if lengths:
        padded = sum(lengths) / (len(lengths) * max(lengths))
        lines.append(f"padding efficiency (one example a row, padded to the longest): {padded:.1%}")
    if lengths and not objective.PACKABLE:
        name = objective.Config.model_fields["name"].default
        lines.append(f"packing: not used by objective {name} (each example is its own row)")
    elif lengths:
        bins = pack(lengths, data_cfg.cutoff_len)
        lines.append(f"packing efficiency ({len(bins):,} rows of {data_cfg.cutoff_len} tokens): "
                     f"{packing_efficiency(lengths, bins, data_cfg.cutoff_len):.1%}"
                     + ("" if data_cfg.packing else "  (data.packing is off)"))
    if new_token_ids:
        lines.append(f"template tokens added to the tokenizer (embeddings resized, rows trained): "
                     f"{tokenizer.convert_ids_to_tokens(new_token_ids)}")
    stops = objective.end_ids(tokenizer, template)
    if stops:
        have, total = eos_coverage(data.train, stops)
        if have < total:
            names = tokenizer.convert_ids_to_tokens(stops)
            lines.append(f"WARNING: {total - have:,} of {total:,} training examples have no end-of-turn/EOS token "
                         f"{names} in their labels: the model will not learn to stop. Check data.add_eos_token "
                         f"and that the pad token is not masking EOS.")
    lines.append(f"== examples (trained text inside {OPEN} {CLOSE})")
    for e in data.train[:2]:
        lines += [f"-- {e.source}:{e.line} ({len(e.input_ids)} tokens{_drawn(e.meta)})", objective.render(e, tokenizer)]
    return "\n".join(lines)
