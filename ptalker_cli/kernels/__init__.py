"""Native (C) kernels for CPU inference: the C sources and the one module that builds, caches
and loads them (:mod:`.build`).

* ``decoder.c`` — the whole cached autoregressive pass of the motion decoder in one call
  (Python side: :mod:`ptalker_cli.model.native_decoder`);
* ``graph_encoder.c`` — the fused graph-attention layer of E_G (Python side:
  :mod:`ptalker_cli.model.graph_encoder`).

Every kernel is optional: without a C compiler (or with ``PTALKER_NO_NATIVE=1``) the model
runs its PyTorch paths, which agree with the kernels to float32 round-off.
"""
