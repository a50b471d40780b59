"""What an export wrote and measured: one :class:`Artifact` per file (and per Keras
reference), gathered in an :class:`ExportReport` that prints as a table."""

from __future__ import annotations

import dataclasses

__all__ = ["Artifact", "ExportReport", "size_text"]


@dataclasses.dataclass
class Artifact:
    """One thing written (or the reference model), with its measured figures.

    ``top1``: accuracy on the held-out images; ``agreement``: top-1 agreement with the
    Keras model it was made from (None without held-out data).
    """

    kind: str
    path: str | None
    size_bytes: int | None = None
    gzipped_bytes: int | None = None
    top1: float | None = None
    agreement: float | None = None
    eval_images: int = 0
    notes: str = ""


@dataclasses.dataclass
class ExportReport:
    """Every artifact of one export, and the kernel sparsity of each pruned layer."""

    model_name: str
    version: int
    artifacts: list[Artifact]
    sparsity: dict[str, float] | None = None

    def lines(self) -> list[str]:
        """The printed summary: one row per artifact, then its notes."""
        images = max((a.eval_images for a in self.artifacts), default=0)
        out = [f"export of {self.model_name}, version {self.version}"
               + (f" (top-1 on {images} held-out images; 'agrees': top-1 agreement with "
                  "the Keras model it was made from):" if images else ":")]
        rows = [("artifact", "size", "gzipped", "top-1", "agrees", "path")]
        for a in self.artifacts:
            rows.append((a.kind,
                         size_text(a.size_bytes) if a.size_bytes is not None else "-",
                         size_text(a.gzipped_bytes) if a.gzipped_bytes is not None else "-",
                         f"{a.top1:.2%}" if a.top1 is not None else "-",
                         f"{a.agreement:.2%}" if a.agreement is not None else "-",
                         a.path or ""))
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        for row in rows:
            out.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths))
                       + "  " + row[5])
        for a in self.artifacts:
            if a.notes:
                out.append(f"    - {a.kind}: {a.notes}")
        if self.sparsity:
            lo = min(self.sparsity.values())
            out.append(f"  pruned {len(self.sparsity)} layers: kernel sparsity >= {lo:.2%} "
                       "in every one")
        return out


def size_text(n: int) -> str:
    """A byte count as the report prints it (``1.23 MB``, ``45.6 kB``)."""
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
