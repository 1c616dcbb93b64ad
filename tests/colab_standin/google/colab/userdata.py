"""``google.colab.userdata.get``: a Colab secret (key-icon panel), or the two errors colabtools raises.

Secrets come from ``$COLAB_STANDIN_SECRETS`` (JSON ``{name: value}``) or :func:`set_secret`; a secret the notebook
was not granted access to raises ``NotebookAccessError``, one that does not exist ``SecretNotFoundError``.
"""

import json
import os


class NotebookAccessError(Exception):
    def __init__(self, key):
        super().__init__(f"Notebook does not have access to secret {key}")


class SecretNotFoundError(Exception):
    def __init__(self, key):
        super().__init__(f"Secret {key} does not exist.")


_secrets: dict[str, tuple[str, bool]] = {}


def set_secret(name: str, value: str, access: bool = True) -> None:
    _secrets[name] = (value, access)


def get(key):
    found = dict(_secrets)
    for name, value in json.loads(os.environ.get("COLAB_STANDIN_SECRETS") or "{}").items():
        found.setdefault(name, (value, True))
    if key not in found:
        raise SecretNotFoundError(key)
    value, access = found[key]
    if not access:
        raise NotebookAccessError(key)
    return value
