"""Loading pretrained speech encoders from the Hugging Face hub (or a local folder).

This is the code path users get: ``transformers`` ``from_pretrained`` with the pinned
revision, the hub's cache, and its offline switch (``HF_HUB_OFFLINE=1``). Network and
cache failures become one-line :class:`~ptalker_cli.errors.PtalkerError` messages.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import PtalkerError


def load_pretrained_speech_model(model_cls, model_id: str, revision: str | None, **config_overrides):
    local = Path(model_id).expanduser()
    source = str(local) if local.is_dir() else model_id
    kwargs = {} if local.is_dir() else {"revision": revision}
    try:
        return model_cls.from_pretrained(source, **kwargs, **config_overrides)
    except OSError as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = (
            "it is not in the local cache and HF_HUB_OFFLINE is set; download it once with network access "
            f"(ptalker models download, or huggingface-cli download {model_id} --revision {revision})"
            if offline
            else "check the network connection, the model id and revision, or pass a local folder"
        )
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PtalkerError(f"cannot load speech encoder '{model_id}' @ {revision}: {first}; {hint}") from None
