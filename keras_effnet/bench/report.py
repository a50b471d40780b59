"""Benchmark results: the machine description, ``results.json`` and ``results.md``.

Every section returns a plain dict (JSON-ready) with ``title``, ``columns`` (pairs of
row key and column header), ``rows`` and optional ``notes``; :func:`render_markdown`
turns the whole results document into one markdown file with a table per section.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
from pathlib import Path
from typing import Any, Mapping, Sequence

from keras_effnet.run_dir import jsonable, write_json

__all__ = ["machine_info", "cpu_model", "format_value", "markdown_table", "render_markdown",
           "load_results", "merge_results", "json_ready", "write_results", "utc_now"]


def cpu_model(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """The CPU's marketing name from ``/proc/cpuinfo`` (``model name``; ARM kernels
    write ``Model`` or ``Hardware`` instead), else ``platform.processor()``."""
    try:
        text = Path(cpuinfo_path).read_text(errors="replace")
    except OSError:
        text = ""
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in text.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def machine_info(device: str = "cpu", accelerator: str | None = None) -> dict[str, Any]:
    """Where the numbers were measured: CPU model, cores, device and library versions.

    ``device`` is "cpu" or "gpu"; ``accelerator`` names the GPU when there is one.
    Library versions are read from package metadata, so TensorFlow is not imported here.
    """
    from importlib import metadata

    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 1,
        "usable_cores": _usable_cores(),
        "device": device,
        "accelerator": accelerator,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": version("tensorflow"),
        "keras": version("keras"),
        "ai_edge_litert": version("ai-edge-litert"),
    }


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second (``2026-01-01T00:00:00Z``)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_value(value: Any) -> str:
    """One table cell: "–" for missing, thousands separators for large numbers, three
    significant digits otherwise."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]],
                   columns: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table: ``columns`` are ``(row key, header)`` pairs."""
    if not columns:
        raise ValueError("markdown_table needs at least one column.")
    headers = [str(header) for _, header in columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(format_value(row.get(key)) for key, _ in columns) + " |")
    return "\n".join(lines)


def render_markdown(results: Mapping[str, Any], order: Sequence[str] = ()) -> str:
    """The whole results document as markdown: header, then one table per section."""
    machine = results.get("machine", {})
    accel = f", {machine['accelerator']}" if machine.get("accelerator") else ""
    lines = [
        f"# keras_effnet benchmarks ({machine.get('device', 'cpu')})",
        "",
        f"- Command: `{results.get('command', '?')}`",
        f"- Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores "
        f"({machine.get('usable_cores', '?')} usable), device "
        f"{machine.get('device', '?')}{accel}; TensorFlow {machine.get('tensorflow')}, "
        f"Keras {machine.get('keras')}, Python {machine.get('python')}",
        f"- Date: {results.get('date', '?')} (wall time {format_value(results.get('wall_s'))} s)",
        "",
        "Times are medians of interleaved A/B repeats after a warm-up, in one process. The "
        "machine may be shared and noisy: compare the ratios, not the absolute numbers. "
        "Nothing here is asserted; it is a report.",
    ]
    sections = results.get("sections", {})
    names = [n for n in order if n in sections] + [n for n in sections if n not in order]
    for name in names:
        section = sections[name]
        lines += ["", f"## {section.get('title', name)}", ""]
        meta = [f"section `{name}`", f"{section.get('mode', '?')} settings"]
        if section.get("date"):
            meta.append(f"measured {section['date']}")
        if section.get("wall_s") is not None:
            meta.append(f"took {format_value(section['wall_s'])} s")
        if section.get("command") and section.get("command") != results.get("command"):
            meta.append(f"by `{section['command']}`")
        if section.get("cpu") and section.get("cpu") != machine.get("cpu"):
            meta.append(f"on {section['cpu']}")
        lines.append("(" + "; ".join(meta) + ")")
        lines.append("")
        if section.get("error"):
            lines.append(f"**Failed:** {format_value(section['error'])}")
            continue
        tables = section.get("tables") or [
            {"columns": section.get("columns", []), "rows": section.get("rows", [])}]
        for table in tables:
            if table.get("caption"):
                lines += [table["caption"], ""]
            if table.get("columns"):
                lines += [markdown_table(table.get("rows", []), table["columns"]), ""]
        for note in section.get("notes", []):
            lines.append(f"- {note}")
        for figure in section.get("figures", []):
            lines += ["", f"![{figure}]({figure})"]
    return "\n".join(lines).rstrip() + "\n"


def load_results(path: str | os.PathLike) -> dict[str, Any] | None:
    """A previous ``results.json``, or None when missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def merge_results(previous: Mapping[str, Any] | None,
                  current: Mapping[str, Any]) -> dict[str, Any]:
    """``current`` with the sections of ``previous`` it did not rerun kept.

    A partial rerun (``--only``) keeps the earlier header (the command, date, machine and
    settings of the run most sections come from) and stamps each rerun section with its
    own command, date and CPU instead; a run that covers every earlier section is the new
    header."""
    old_sections = dict((previous or {}).get("sections", {}))
    new_sections = current.get("sections", {})
    if set(old_sections) <= set(new_sections):
        return {**current, "sections": {**old_sections, **new_sections}}
    stamp = {"command": current.get("command"), "date": current.get("date"),
             "cpu": current.get("machine", {}).get("cpu")}
    for name, section in new_sections.items():
        old_sections[name] = {**{k: v for k, v in stamp.items() if v}, **section}
    return {**previous, "sections": old_sections}


def json_ready(value: Any) -> Any:
    """``value`` as plain JSON: numpy values made Python ones, non-finite floats written
    as strings ("nan", "inf"), so the file stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if getattr(value, "ndim", 0) and hasattr(value, "tolist"):  # numpy arrays
        return json_ready(value.tolist())
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return json_ready(jsonable(value))
    return value


def write_results(out_dir: str | os.PathLike, results: Mapping[str, Any],
                  order: Sequence[str] = ()) -> tuple[Path, Path]:
    """Writes ``results.json`` and ``results.md`` into ``out_dir`` (atomically each)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = json_ready(results)
    json_path, md_path = out / "results.json", out / "results.md"
    write_json(json_path, data)
    tmp = md_path.with_name(f".{md_path.name}.tmp")
    tmp.write_text(render_markdown(data, order), encoding="utf-8")
    os.replace(tmp, md_path)
    return json_path, md_path
