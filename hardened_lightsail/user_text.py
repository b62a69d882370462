"""How text the user typed (config values and keys) appears in messages: quoted, with control
characters escaped and long values cut, so every problem stays one readable line on a terminal."""
from __future__ import annotations

import json
import re
from typing import Any

SHOWN_CHARACTERS = 60  # a longer value is cut, with its length named
PLAIN_KEY = re.compile(r"[A-Za-z0-9_]{1,%d}" % SHOWN_CHARACTERS)  # noqa: UP031 (an f-string doubles the braces)


def printable(text: str) -> bool:
    """Text a message (or a suggested shell command) can carry as it is: no control characters."""
    return text.isprintable()


def show(value: Any) -> str:
    """A value for a message: a string in double quotes, its control characters escaped as JSON
    writes them ("web\\n", "\\u001b"), anything else as Python writes it; cut after
    SHOWN_CHARACTERS characters."""
    if isinstance(value, str):
        cut = len(value) > SHOWN_CHARACTERS
        text = "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in value[:SHOWN_CHARACTERS])
        return f"\"{text}…\" ({len(value):,} characters)" if cut else f"\"{text}\""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARACTERS else f"{text[:SHOWN_CHARACTERS]}… ({len(text):,} characters)"


def key_path(path: str, key: Any) -> str:
    """`path.key`, or `path["key"]` (escaped, as `config set --path` writes it) for a key that is
    not a plain name."""
    if isinstance(key, str) and PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{show(key if isinstance(key, str) else str(key))}]"
