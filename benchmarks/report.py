"""Results (JSON lines, one per configuration) -> a markdown table with ratios against B0 and B1.

Within a group (same shape, workload and batch layout), every row's tokens/s is divided by the B0
row's and the B1 row's of that group, measured in the same run; step-1 loss and gradient norm of
the row marked `parity` are compared with B0's (same rows, same weights, same adapter init).
"""

from __future__ import annotations

import json
from pathlib import Path


def read(path: Path) -> list[dict]:
    """Records of a results file; a configuration run again replaces its earlier record."""
    latest: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            latest[record["id"]] = record
    return list(latest.values())


def _fmt(x, spec: str = ".3g") -> str:
    return "–" if x is None else format(x, spec)


def _memory(r: dict) -> str:
    if "peak_allocated_gib" in r:
        return f"{r['peak_allocated_gib']:.1f} / {r['peak_reserved_gib']:.1f}"
    return _fmt(r.get("peak_rss_gib"), ".2f")


def _ratio(r: dict, ref: dict | None) -> str:
    if ref is None or ref.get("status") != "ok" or r.get("status") != "ok":
        return "–"
    return f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}×"


def parity(records: list[dict]) -> list[dict]:
    """Per group: step-1 loss and grad norm of the `parity` row against B0's, relative differences."""
    out = []
    for group in dict.fromkeys(r["group"] for r in records):
        rows = {r["label"]: r for r in records if r["group"] == group and r.get("status") == "ok"}
        b0 = rows.get("B0")
        for r in rows.values():
            if b0 is None or not r.get("parity"):
                continue
            out.append({"group": group, "label": r["label"],
                        "loss_rel": abs(r["loss_step1"] - b0["loss_step1"]) / abs(b0["loss_step1"]),
                        "grad_norm_rel": abs(r["grad_norm_step1"] - b0["grad_norm_step1"]) / abs(b0["grad_norm_step1"])})
    return out


def twins(records: list[dict]) -> list[dict]:
    """Per bf16 row with a `twin`: its step-1 loss against that fp32 row's, relative difference."""
    out = []
    for r in records:
        twin = next((t for t in records if t["group"] == r["group"] and t["label"] == r.get("twin")), None)
        if twin is None or r.get("status") != "ok" or twin.get("status") != "ok":
            continue
        out.append({"group": r["group"], "label": r["label"], "twin": twin["label"],
                    "loss_rel": abs(r["loss_step1"] - twin["loss_step1"]) / abs(twin["loss_step1"])})
    return out


def best_of_each(records: list[dict], target: float = 1.5) -> list[str]:
    """Per group: Trainer's fastest row (B0 best; with or without Liger kernels, B1) against ours'
    fastest, whatever their settings: the comparison a user switching tools would make. Empty when a
    group lacks either system."""
    lines = []
    for group in dict.fromkeys(r["group"] for r in records):
        ok = [r for r in records if r["group"] == group and r.get("status") == "ok"]
        hf = max((r for r in ok if r.get("system") in ("hf", "hf_liger")), key=lambda r: r["tokens_per_s"], default=None)
        ours = max((r for r in ok if r.get("system") == "ours"), key=lambda r: r["tokens_per_s"], default=None)
        if hf is None or ours is None:
            continue
        ratio = ours["tokens_per_s"] / hf["tokens_per_s"]
        lines.append(f"| {group} | {hf['tokens_per_s']:.1f} ({hf['settings']}) | {ours['tokens_per_s']:.1f} "
                     f"({ours['settings']}) | **{ratio:.2f}×** | {target}×: {'met' if ratio >= target else 'missed'} |")
    if not lines:
        return []
    return ["Each system at its fastest setting (tokens/s; B0 best = the fastest Trainer + PEFT row of the group, "
            "Liger rows included):", "",
            "| group | B0 best | ours best | ours / B0 best | target |", "|---|---|---|---:|---|", *lines, ""]


def markdown(records: list[dict], title: str, command: str) -> str:
    probes = [r for r in records if r.get("probe")]
    records = [r for r in records if not r.get("probe")]
    if not records and not probes:
        return f"# {title}\n\nno results\n"
    env = next((r["env"] for r in records + probes if r.get("env")), {})
    lines = [f"# {title}", "",
             "Commands: " + ", ".join(f"`{c}`" for c in dict.fromkeys(r.get("command", command) for r in records + probes)) + "  ",
             f"Device: {env.get('device', '?')}; torch {env.get('torch', '?')}, transformers "
             f"{env.get('transformers', '?')}, peft {env.get('peft', '?')}"
             + (f", liger-kernel {env['liger_kernel']}" if env.get("liger_kernel") else "") + "  "]
    # a probe-only file (the context probe) has no throughput table and no MFU
    lines += _throughput(records) if records else [""]
    if probes:
        lines += ["", "Longest context at batch 1 under the memory cap:", ""]
        lines += [f"- {p['label']}: {p['longest']} tokens (cap {p['memory_cap_gib']} GiB; OOM at {p.get('oom_at', '–')})"
                  for p in probes]
    return "\n".join(lines) + "\n"


def _throughput(records: list[dict]) -> list[str]:
    """The MFU convention, the best-against-best table, every row, and the parity and bf16 checks."""
    first_ok = next((r for r in records if r.get("status") == "ok"), {})
    memory_head = "peak alloc / reserved GiB" if "peak_allocated_gib" in first_ok else "peak RSS GiB"
    lines = [f"MFU peak: {first_ok.get('peak_flops_source', '?')}; FLOPs/token = 4·N_matmul + 12·L·d·s + 6·N_lora "
             f"(s = token-weighted mean example length; recompute not counted).", "",
             *best_of_each(records),
             f"| group | row | settings | tokens/s | ×B0 | ×B1 | MFU | {memory_head} | step-1 loss | step-1 grad norm "
             f"| loss at step k |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for group in dict.fromkeys(r["group"] for r in records):
        rows = [r for r in records if r["group"] == group]
        by_label = {r["label"]: r for r in rows}
        for r in rows:
            if r.get("status") != "ok":
                lines.append(f"| {group} | {r['label']} | {r.get('settings', '')} | {r.get('status')}: "
                             f"{r.get('error', '')[:80]} | | | | | | | |")
                continue
            lines.append(
                f"| {group} | {r['label']} | {r.get('settings', '')} | {r['tokens_per_s']:.1f} | "
                f"{_ratio(r, by_label.get('B0'))} | {_ratio(r, by_label.get('B1'))} | {_fmt(r.get('mfu'), '.1%')} | "
                f"{_memory(r)} | {r['loss_step1']:.4f} | {_fmt(r.get('grad_norm_step1'), '.4f')} | "
                f"{r['loss_step_k']:.4f} (k={r['k_step']}) |")
    checks = parity(records)
    if checks:
        lines += ["", "Step-1 parity against B0 (same rows, weights and adapter init):", ""]
        lines += [f"- {c['group']} / {c['label']}: loss differs by {c['loss_rel']:.2e} (relative), "
                  f"gradient norm by {c['grad_norm_rel']:.2e}" for c in checks]
    bf16 = twins(records)
    if bf16:
        lines += ["", "bf16 rows: step-1 loss against the same system's fp32 row (target: within 1e-2, relative):", ""]
        lines += [f"- {c['group']} / {c['label']} vs {c['twin']}: {c['loss_rel']:.2e}"
                  f" ({'within' if c['loss_rel'] <= 1e-2 else 'outside'})" for c in bf16]
    return lines
