"""The one error type of the converters."""


class ConversionError(ValueError):
    """A model or state dict that cannot be converted exactly; the message names what and why.

    The command-line tools print it and exit with status 2 (no traceback).
    """


def format_key_problems(title: str, *, missing=(), unexpected=(), mismatched=(), other=(),
                        limit: int = 50) -> str:
    """One message listing every offending key, grouped (at most `limit` per group)."""

    def group(name: str, items) -> list[str]:
        items = list(items)
        if not items:
            return []
        shown = items[:limit]
        more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
        return [f"  {name} ({len(items)}):"] + [f"    {item}" for item in shown] + (
            [f"    ...{more}"] if more else [])

    lines = [title]
    lines += group("missing keys", missing)
    lines += group("unexpected keys", unexpected)
    lines += group("shape mismatches", [f"{k}: got {tuple(g)}, expected {tuple(w)}"
                                        for k, g, w in mismatched])
    lines += group("other problems", other)
    return "\n".join(lines)
