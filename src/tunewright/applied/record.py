"""A recorded table: results.json and report.md in its folder, each with the command that made it,
the wall time and the machine's load (`uptime` before and after: the machine may be shared)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from tunewright.eval.report import markdown_table

__all__ = ["Recording", "write_jsonl"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


class Recording:
    """Rows of a table as they are measured, then written with their command, wall time and load."""

    def __init__(self, out: Path, title: str, command: str):
        self.out, self.title, self.command = Path(out), title, command
        self.rows: list[dict] = []
        self.start, self.load_before = time.perf_counter(), _load()

    def add(self, **row) -> None:
        self.rows.append(row)

    def write(self, columns: list[str], notes: list[str]) -> dict:
        seconds = round(time.perf_counter() - self.start, 1)
        results = {"title": self.title, "command": self.command, "wall_seconds": seconds,
                   "load_before": self.load_before, "load_after": _load(), "machine": platform.platform(),
                   "date": time.strftime("%Y-%m-%d"), "rows": self.rows, "notes": notes}
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        table = markdown_table(columns, [[r.get(c, "") for c in columns] for r in self.rows])
        text = [f"# {self.title}", "", f"`{self.command}`", "",
                f"{results['date']}: {seconds / 60:.1f} min wall; {self.load_before} at the start, "
                f"{results['load_after']} at the end.", "", table, "", *[f"- {n}" for n in notes], ""]
        (self.out / "report.md").write_text("\n".join(text), encoding="utf-8")
        return results
