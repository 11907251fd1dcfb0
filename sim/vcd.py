"""Cut a VCD waveform down to a scope and a time window (``deltanet simulate --waves``).

A whole closed-loop run dumps every signal of the design at every cycle; most of it is rarely
wanted. :func:`filter_vcd` keeps the variables whose hierarchical name starts with ``scope``
(``deltanet_core.lane0``, say; dots between scopes) and the value changes from time ``start``
to ``stop`` (in the file's own time unit). The window opens with a ``$dumpvars`` block holding
every kept variable's value at ``start``, so the cut file shows the right values from its first
time stamp. Streaming: the file is read once, line by line.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["filter_vcd", "timescale_s"]

_VAR = re.compile(r"\$var\s+\S+\s+\d+\s+(\S+)\s+(\S+)(?:\s+\[[^\]]*\])?\s+\$end")
_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9, "ps": 1e-12, "fs": 1e-15}


def timescale_s(header: str) -> float:
    """Seconds per time unit from a VCD header's ``$timescale``."""
    m = re.search(r"\$timescale\s+(\d+)\s*([munpf]?s)\s+\$end", header)
    if m is None:
        raise ValueError("VCD without a $timescale")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _change_id(line: str) -> str | None:
    """The identifier a value-change line sets (``1!``, ``b101 #``, ``r0.5 %``), else None."""
    if not line or line[0] in "#$":
        return None
    if line[0] in "bBrR":
        parts = line.split()
        return parts[1] if len(parts) == 2 else None
    return line[1:] if line[0] in "01xXzZ" else None


def filter_vcd(src, dst, *, scope: str | None = None, start: int | None = None,
               stop: int | None = None) -> dict:
    """Write the part of VCD ``src`` inside ``scope`` and ``[start, stop]`` to ``dst`` (may be
    ``src``). Returns ``{"vars": kept, "of": all, "start": ..., "stop": ...}``."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.filter.tmp")
    kept, total, path = set(), 0, []
    last = {}  # id -> latest value line before the window
    with open(src) as f, open(tmp, "w") as out:
        try:
            header = []
            for line in f:
                s = line.strip()
                if s.startswith("$scope"):
                    path.append(s.split()[2])
                elif s.startswith("$upscope"):
                    path.pop()
                elif s.startswith("$var"):
                    total += 1
                    m = _VAR.search(s)
                    name = ".".join(path + [m.group(2)]) if m else ""
                    if m and (scope is None or name.startswith(scope)):
                        kept.add(m.group(1))
                    elif m:
                        continue
                header.append(line)
                if s.startswith("$enddefinitions"):
                    break
            out.writelines(header)
            now, opened, done = 0, start is None, False
            for line in f:
                s = line.strip()
                if s.startswith("#"):
                    now = int(s[1:])
                    if stop is not None and now > stop:
                        done = True
                        break
                    if not opened and now >= start:
                        out.write(f"#{start}\n$dumpvars\n")
                        out.writelines(v + "\n" for v in last.values())
                        out.write("$end\n")
                        opened = True
                        if now == start:
                            continue
                    if opened:
                        out.write(line)
                    continue
                ident = _change_id(s)
                if ident is None:
                    if opened and s and (start is None
                                         or not s.startswith(("$dumpvars", "$end"))):
                        out.write(line)
                    continue
                if ident not in kept:
                    continue
                if opened:
                    out.write(line)
                else:
                    last[ident] = s
            if not opened and not done and start is not None:  # the window starts after the end
                out.write(f"#{start}\n$dumpvars\n")
                out.writelines(v + "\n" for v in last.values())
                out.write("$end\n")
        except BaseException:
            out.close()
            tmp.unlink(missing_ok=True)
            raise
    tmp.replace(dst)
    return {"vars": len(kept), "of": total, "start": start, "stop": stop}
