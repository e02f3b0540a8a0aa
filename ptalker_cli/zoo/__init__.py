"""The model zoo: named models, verified hub downloads, publishing, and importing checkpoints.

* :mod:`.registry` — the registry (``registry.json`` + the user's file) as data;
* :mod:`.hub` — downloads through huggingface_hub's cache, sha256 verification, offline
  rules, ``--model`` resolution and the pretrained speech encoders;
* :mod:`.card` — model cards and ``ptalker models push``;
* :mod:`.convert` — checkpoints of the authors' released code → ptalker models;
* :mod:`.testing` — a fake hub on 127.0.0.1 for tests.

See docs/models.md.
"""
