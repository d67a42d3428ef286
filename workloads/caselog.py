"""Case logs (`--case-log`): one JSON record per case as it ends, with its gate verdict, its
failures and its result. The baselines fold them into entries; the report renders them."""
from __future__ import annotations

import json
from pathlib import Path


class CaseLogError(ValueError):
    """A case log that cannot be read; the message names the file and the line."""


def read(logs) -> list[tuple[str, dict]]:
    """Every record of the logs, in order, each with where it came from (`file:line`)."""
    records = []
    for log in logs:
        try:
            lines = Path(log).read_text().splitlines()
        except OSError as e:
            raise CaseLogError(f"case log {log}: cannot read it ({e.strerror})") from None
        for n, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
                result = record["result"]
                ok = all(isinstance(result.get(k), dict) for k in ("latency_ms", "provenance")) and "case" in result
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                ok = False
            if not ok:
                raise CaseLogError(f"case log {log}, line {n}: not a case-log record (a JSON object whose "
                                   f"'result' has a case, latency_ms and provenance)")
            records.append((f"{log}:{n}", record))
    return records
