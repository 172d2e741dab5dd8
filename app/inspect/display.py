"""Byte counts and hex dumps, as people read them."""

from __future__ import annotations

__all__ = ["hex_dump", "human_size", "size_label"]

_PRINTABLE = bytes(b if 0x20 <= b < 0x7F else ord(".") for b in range(256))


def human_size(n: int) -> str:
    """A byte count for people: "0 B", "512 B", "1.5 KiB", "25.0 MiB"."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        # Compare the rounded value so 1048575 bytes reads "1.0 MiB", not "1024.0 KiB".
        if round(value, 1) < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def size_label(n: int) -> str:
    """``human_size`` for limits in notes: round sizes read "1 MiB" rather than "1.0 MiB"."""
    return human_size(n).replace(".0 ", " ")


def hex_dump(data: bytes, cap: int) -> tuple[list[str], bool]:
    """Classic ``hexdump -C`` lines for the first ``cap`` bytes of ``data``.

    Each line is an 8-digit hex offset, 16 bytes in two groups of 8 and an ASCII column with "."
    for anything not printable. Returns the lines and whether ``data`` was longer than ``cap``.
    """
    shown = data[: max(cap, 0)]
    lines = []
    for off in range(0, len(shown), 16):
        row = shown[off : off + 16]
        left = row[:8].hex(" ")
        right = row[8:].hex(" ")
        text = row.translate(_PRINTABLE).decode("ascii")
        lines.append(f"{off:08x}  {left:<23}  {right:<23}  |{text}|")
    return lines, len(data) > len(shown)
