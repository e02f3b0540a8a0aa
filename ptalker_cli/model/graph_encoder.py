"""Graph attention encoder ``E_G`` (spec §1.2) over a face mesh's edge graph.

Every frame's per-vertex displacement field (V, 3) is treated as a graph signal on the mesh
edge graph (edges from the topology file's faces, plus self-loops).  A small stack of GAT
layers (ELU in between, none after the last) updates the per-vertex features; the result is
flattened (V·C) and mapped to ``out_dim`` with one linear layer.  Weights are shared across
frames.

Speed design (BIWI: 23,370 vertices, 69,440 edges, degree 3-7):

* The graph is stored once as a dense fixed-width neighbour table ``(V, K)`` with
  ``K = max_degree + 1`` slots (slot 0 = the vertex itself, then its neighbours in ascending
  order, then padding) and a validity mask; no scatter/segment ops are needed.
* Internally features use a *vertex-major* layout ``(V, C, N)`` (frames innermost), so every
  neighbour gather copies contiguous rows of ``C·N`` floats and all per-slot arithmetic is
  vectorised over frames.
* When ``in_channels <= out_channels`` (per head) the layer aggregates the *input* features with
  the attention weights and applies ``W`` afterwards (``Σ α W h = W Σ α h``); attention scores
  are computed as ``h · (Wᵀ a)``.  So the per-edge work moves ``in_channels`` floats, not
  ``heads·out_channels``.
* Inference (no autograd) uses a fused C kernel (``ptalker_cli/kernels/graph_encoder.c``,
  compiled once with the system C compiler and loaded with ``ctypes`` by
  :mod:`ptalker_cli.kernels.build`; online max / exp / weighted sum over the ``K`` slots, OpenMP
  over vertices).  If no compiler is available, or autograd is needed (training), a pure-PyTorch
  path is used; the two agree to float32 round-off.  The pure-PyTorch path processes frames in
  chunks (``chunk_frames``) to bound memory.  Set ``PTALKER_NO_NATIVE=1`` to disable the kernel;
  ``CC`` picks the compiler, ``PTALKER_CACHE`` the build cache (default ~/.cache/ptalker; kernels in its ``kernels/``).

The math of :class:`GraphAttentionLayer` equals ``torch_geometric.nn.GATConv`` with
``add_self_loops=True`` (negative slope 0.2, concatenated heads, bias); see
:meth:`GraphAttentionLayer.from_gatconv`.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kernels.build import kernel, native_disabled, ptr

__all__ = [
    "GraphAttentionLayer",
    "GraphAttentionEncoder",
    "neighbour_table",
    "native_available",
]


# --------------------------------------------------------------------------------------------
# neighbour table
# --------------------------------------------------------------------------------------------


def _as_edge_array(edges) -> np.ndarray:
    if isinstance(edges, Tensor):
        edges = edges.detach().cpu().numpy()
    e = np.asarray(edges, dtype=np.int64)
    if e.ndim != 2 or e.shape[1] != 2:
        raise ValueError(f"edges must have shape (E, 2), got {e.shape}")
    return e


def neighbour_table(edges, num_vertices: int) -> tuple[Tensor, Tensor]:
    """Dense neighbour table of an undirected graph, self-loops included.

    ``edges``: (E, 2) undirected edges (either orientation; duplicates and self-loops are
    dropped).  Returns ``(index, mask)``, both (V, K) with ``K = max_degree + 1``: slot 0 is the
    vertex itself, then its neighbours in ascending order, then padding slots that repeat the
    vertex's own index with ``mask == False``.  Valid slots always form a prefix.
    """
    V = int(num_vertices)
    e = _as_edge_array(edges)
    if e.size and (e.min() < 0 or e.max() >= V):
        raise ValueError("edge index out of range")
    e = e[e[:, 0] != e[:, 1]]
    e = np.sort(e, axis=1)
    e = np.unique(e, axis=0) if len(e) else e.reshape(0, 2)
    src = np.concatenate([e[:, 1], e[:, 0]])  # neighbour
    dst = np.concatenate([e[:, 0], e[:, 1]])  # centre vertex
    order = np.lexsort((src, dst))
    src, dst = src[order], dst[order]
    deg = np.bincount(dst, minlength=V)
    K = int(deg.max(initial=0)) + 1
    start = np.concatenate([[0], np.cumsum(deg)[:-1]])
    slot = np.arange(len(dst)) - start[dst] + 1
    index = np.repeat(np.arange(V, dtype=np.int64)[:, None], K, axis=1)
    index[dst, slot] = src
    mask = np.arange(K)[None, :] <= deg[:, None]
    return torch.from_numpy(index), torch.from_numpy(mask)


# --------------------------------------------------------------------------------------------
# fused native kernel (inference only): ptalker_cli/kernels/graph_encoder.c
# --------------------------------------------------------------------------------------------

_FMAX = 8  # widest per-head feature the fused kernel keeps in registers (the C side's FMAX)


def _check_fmax(lib: ctypes.CDLL) -> None:
    if lib.gat_max_features() != _FMAX:
        raise RuntimeError("graph encoder kernel FMAX mismatch")


_gat_lib = kernel("graph_encoder", _check_fmax)
_native_error: str | None = None  # why the kernel is unavailable (None: available/untried)


def _get_native() -> ctypes.CDLL | None:
    global _native_error
    if native_disabled():
        _native_error = "disabled by PTALKER_NO_NATIVE"
        return None
    lib = _gat_lib.get()
    _native_error = _gat_lib.error
    return lib


def native_available() -> bool:
    """Whether the fused C inference kernel could be built/loaded on this machine."""
    return _get_native() is not None


# --------------------------------------------------------------------------------------------
# GAT layer
# --------------------------------------------------------------------------------------------


class GraphAttentionLayer(nn.Module):
    """GAT layer on a dense neighbour table; numerically equal to ``GATConv(add_self_loops=True)``.

    Parameters mirror ``torch_geometric.nn.GATConv``: ``lin.weight`` (heads·out, in),
    ``att_src`` / ``att_dst`` (1, heads, out), ``bias`` (heads·out if ``concat`` else out).
    The neighbour table must include each vertex's self-loop (see :func:`neighbour_table`).
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1,
                 negative_slope: float = 0.2, concat: bool = True, bias: bool = True):
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.heads = int(heads)
        self.negative_slope = float(negative_slope)
        self.concat = bool(concat)
        self.lin = nn.Linear(self.in_channels, self.heads * self.out_channels, bias=False)
        self.att_src = nn.Parameter(torch.empty(1, self.heads, self.out_channels))
        self.att_dst = nn.Parameter(torch.empty(1, self.heads, self.out_channels))
        if bias:
            self.bias = nn.Parameter(torch.empty(self.heads * self.out_channels if concat else self.out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    @property
    def out_features(self) -> int:
        return self.heads * self.out_channels if self.concat else self.out_channels

    @property
    def aggregate_input(self) -> bool:
        """Aggregate raw inputs then apply W (cheaper when in <= out per head)."""
        return self.in_channels <= self.out_channels

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.lin.weight)
        nn.init.xavier_uniform_(self.att_src)
        nn.init.xavier_uniform_(self.att_dst)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @classmethod
    def from_gatconv(cls, conv) -> "GraphAttentionLayer":
        """Copy the weights of a ``torch_geometric.nn.GATConv`` (``add_self_loops=True``,
        no edge features, shared source/target projection)."""
        if isinstance(conv.in_channels, (tuple, list)):
            raise ValueError("bipartite GATConv is not supported")
        lin = getattr(conv, "lin", None) or getattr(conv, "lin_src", None)
        layer = cls(conv.in_channels, conv.out_channels, heads=conv.heads,
                    negative_slope=conv.negative_slope, concat=conv.concat,
                    bias=conv.bias is not None)
        with torch.no_grad():
            layer.lin.weight.copy_(lin.weight)
            layer.att_src.copy_(conv.att_src)
            layer.att_dst.copy_(conv.att_dst)
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)
        return layer

    # ---- helpers ------------------------------------------------------------------------
    def _weights(self):
        H, O, C = self.heads, self.out_channels, self.in_channels
        W = self.lin.weight.view(H, O, C)
        if self.aggregate_input:
            w_src = torch.einsum("hoc,ho->hc", W, self.att_src[0])  # Wᵀ a_src, (H, C)
            w_dst = torch.einsum("hoc,ho->hc", W, self.att_dst[0])
        else:
            w_src, w_dst = self.att_src[0], self.att_dst[0]  # (H, O)
        return W, w_src, w_dst

    def forward(self, x: Tensor, nbr_index: Tensor, nbr_mask: Tensor) -> Tensor:
        """x (N, V, in) -> (N, V, heads·out) (or (N, V, out) when ``concat=False``)."""
        squeeze = x.dim() == 2
        if squeeze:
            x = x.unsqueeze(0)
        x_vm = x.permute(1, 2, 0)  # (V, C, N)
        pad = torch.where(nbr_mask, nbr_index, torch.full_like(nbr_index, -1))
        y = self.forward_vm(x_vm, pad)
        y = y.permute(2, 0, 1)
        return y[0] if squeeze else y

    def forward_vm(self, x: Tensor, pad_index: Tensor, elu: bool = False,
                   native: bool | None = None) -> Tensor:
        """Vertex-major core. x (V, in, N); pad_index (V, K) with -1 in padding slots.
        Returns (V, out_features, N)."""
        if native is None:
            native = self.native_ok() and (not (torch.is_grad_enabled() and (x.requires_grad or any(
                p.requires_grad for p in self.parameters())))) and x.device.type == "cpu" \
                and x.dtype == torch.float32 and _get_native() is not None
        if native:
            return self._forward_native(x, pad_index, elu)
        return self._forward_torch(x, pad_index, elu)

    def _forward_torch(self, x: Tensor, pad_index: Tensor, elu: bool) -> Tensor:
        V, C, N = x.shape
        K = pad_index.shape[1]
        H, O = self.heads, self.out_channels
        W, w_src, w_dst = self._weights()
        if self.aggregate_input:
            feat = x.unsqueeze(1)  # (V, 1, C, N), shared across heads
        else:
            feat = torch.einsum("hoc,vcn->vhon", W, x)  # (V, H, O, N)
        s_src = torch.einsum("hf,vgfn->vhn", w_src, feat) if feat.shape[1] == 1 else \
            torch.einsum("hf,vhfn->vhn", w_src, feat)
        s_dst = torch.einsum("hf,vgfn->vhn", w_dst, feat) if feat.shape[1] == 1 else \
            torch.einsum("hf,vhfn->vhn", w_dst, feat)
        # padding slots point at a dummy row V: score -inf (zero weight), features 0
        idx = torch.where(pad_index < 0, torch.full_like(pad_index, V), pad_index).reshape(-1)
        s_src_p = torch.cat([s_src, s_src.new_full((1, H, N), float("-inf"))])
        feat_p = torch.cat([feat, feat.new_zeros((1,) + feat.shape[1:])])
        e = s_src_p.reshape(V + 1, H * N).index_select(0, idx).view(V, K, H, N) + s_dst.unsqueeze(1)
        alpha = torch.softmax(F.leaky_relu(e, self.negative_slope), dim=1)  # (V, K, H, N)
        Hf, Fd = feat.shape[1], feat.shape[2]
        fg = feat_p.reshape(V + 1, Hf * Fd * N).index_select(0, idx).view(V, K, Hf, Fd, N)
        agg = (alpha.unsqueeze(3) * fg).sum(1)  # (V, H, F, N)
        if self.aggregate_input:
            out = torch.einsum("hoc,vhcn->vhon", W, agg)
        else:
            out = agg
        out = out.reshape(V, H * O, N) if self.concat else out.mean(1)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1)
        return F.elu(out) if elu else out

    def native_ok(self) -> bool:
        """Whether the fused kernel supports this layer's widths."""
        f = self.in_channels if self.aggregate_input else self.out_channels
        return f <= _FMAX

    @torch.no_grad()
    def _forward_native(self, x: Tensor, pad_index: Tensor, elu: bool,
                        out: Tensor | None = None, scratch: Tensor | None = None) -> Tensor:
        """x (V, in, N) float32 with unit frame stride and rows of a common stride (e.g. a
        frame slice of a contiguous (V, in, T) tensor); ``out`` likewise, or None."""
        lib = _get_native()
        V, C, N = x.shape
        K = pad_index.shape[1]
        H, O = self.heads, self.out_channels
        W, w_src, w_dst = self._weights()
        x = x.detach()
        if x.stride(2) != 1 or x.stride(0) != C * x.stride(1):
            x = x.contiguous()
        if self.aggregate_input:
            feat, Hf, Fd, P = x, 1, C, W.detach().float().contiguous()
        else:
            feat = torch.einsum("hoc,vcn->vhon", W.detach(), x).contiguous()
            Hf, Fd, P = H, O, None
        ldf = feat.stride(-2)
        w_src = w_src.detach().float().contiguous()
        w_dst = w_dst.detach().float().contiguous()
        pad_index = pad_index.to(torch.int64).contiguous()
        if out is None:
            out = x.new_empty((V, self.out_features, N))
        if out.stride(2) != 1 or out.stride(0) != self.out_features * out.stride(1):
            raise ValueError("out must have unit frame stride and rows of a common stride")
        if scratch is None or scratch.numel() < 2 * V * H * N:
            scratch = x.new_empty(2 * V * H * N)
        ss = scratch[:V * H * N]
        sd = scratch[V * H * N:2 * V * H * N]
        bias = None if self.bias is None else self.bias.detach().float().contiguous()
        lib.gat_layer(ptr(feat), ldf, ptr(pad_index), V, K, H, Hf, Fd, N, ptr(w_src),
                      ptr(w_dst), self.negative_slope, ptr(P), O, ptr(bias),
                      int(self.concat), int(elu), ptr(out), out.stride(1), ptr(ss), ptr(sd),
                      max(1, torch.get_num_threads()))
        return out


# --------------------------------------------------------------------------------------------
# encoder
# --------------------------------------------------------------------------------------------


class GraphAttentionEncoder(nn.Module):
    """``E_G``: per-frame GAT over the mesh graph, then flatten (V·C) -> Linear -> out_dim.

    ``edges``: (E, 2) undirected mesh edges (self-loops are added internally).
    ``channels``: output width of each GAT layer (input width is 3); ELU between layers.
    ``heads``: attention heads per layer (concatenated), so layer widths are heads·channels.
    ``chunk_frames``: frames per chunk on the autograd / pure-PyTorch path (bounds memory).
    ``native_chunk_frames``: frames per call of the final Linear on the fused path (bounds
    memory: ~V·(3 + C)·4 bytes per frame); ``native_block_frames``: frames per kernel call
    (cache blocking).
    ``backend``: "auto" (fused C kernel when no autograd is needed and it is available),
    "torch" or "native".
    """

    def __init__(self, edges, num_vertices: int, out_dim: int, channels=(4, 4), heads: int = 1,
                 chunk_frames: int = 32, backend: str = "auto", native_chunk_frames: int = 256,
                 native_block_frames: int = 128):
        super().__init__()
        if backend not in ("auto", "torch", "native"):
            raise ValueError(f"unknown backend {backend!r}")
        self.num_vertices = int(num_vertices)
        self.out_dim = int(out_dim)
        self.channels = tuple(int(c) for c in channels)
        self.heads = int(heads)
        self.chunk_frames = max(1, int(chunk_frames))
        self.native_chunk_frames = max(1, int(native_chunk_frames))
        self.native_block_frames = max(1, int(native_block_frames))
        self._ws: dict[str, Tensor] = {}
        self._ws_lock = threading.Lock()
        self.backend = backend
        index, mask = neighbour_table(edges, self.num_vertices)
        self.register_buffer("nbr_index", index, persistent=False)
        self.register_buffer("nbr_mask", mask, persistent=False)
        self.register_buffer("pad_index", torch.where(mask, index, torch.full_like(index, -1)),
                             persistent=False)
        layers, c_in = [], 3
        for c in self.channels:
            layers.append(GraphAttentionLayer(c_in, c, heads=self.heads))
            c_in = c * self.heads
        self.layers = nn.ModuleList(layers)
        self.feature_channels = c_in
        self.proj = nn.Linear(self.num_vertices * c_in, self.out_dim)

    def _use_native(self, x: Tensor) -> bool:
        if self.backend == "torch":
            return False
        ok = (x.device.type == "cpu" and x.dtype == torch.float32
              and all(layer.native_ok() for layer in self.layers) and _get_native() is not None)
        if self.backend == "native":
            if not ok:
                raise RuntimeError(f"native GAT kernel unavailable here: {_native_error}")
            return True
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters()))
        return ok and not needs_grad

    def _project(self, flat: Tensor) -> Tensor:
        # flat (V·C, n) is the frame-major flatten of (n, V, C), transposed
        return torch.addmm(self.proj.bias, flat.t(), self.proj.weight.t())

    def _encode_chunk_torch(self, x: Tensor) -> Tensor:
        """x (n, V, 3) -> (n, out_dim) with the pure-PyTorch (autograd) layers."""
        n = x.shape[0]
        h = x.permute(1, 2, 0)  # (V, 3, n) vertex-major
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = layer._forward_torch(h, self.pad_index, elu=i < last)
        return self._project(h.reshape(self.num_vertices * self.feature_channels, n))

    def _workspace(self, name: str, numel: int) -> Tensor:
        """Persistent float32 scratch (first-touch page faults cost as much as the kernels)."""
        buf = self._ws.get(name)
        if buf is None or buf.numel() < numel:
            buf = torch.empty(numel, dtype=torch.float32)
            self._ws[name] = buf
        return buf[:numel]

    def release_workspace(self) -> None:
        """Free the inference scratch buffers kept between calls."""
        self._ws.clear()

    @torch.no_grad()
    def _encode_chunk_native(self, x: Tensor) -> Tensor:
        """x (n, V, 3) float32 -> (n, out_dim) with the fused kernel: frame-major input is
        transposed once to (V·3, n), then :meth:`_encode_vm_native`."""
        lib = _get_native()
        n, V = x.shape[0], self.num_vertices
        x = x.detach().contiguous()
        xt = self._workspace("input", V * 3 * n).view(V, 3, n)
        lib.transpose_f32(ptr(x), n, V * 3, ptr(xt), max(1, torch.get_num_threads()))
        return self._encode_vm_native(xt)

    @torch.no_grad()
    def _encode_vm_native(self, xt: Tensor) -> Tensor:
        """xt (V, 3, n) vertex-major, unit frame stride -> (n, out_dim). The GAT runs on blocks
        of ``native_block_frames`` frames (cache-sized) and writes straight into the (V·C, n)
        matrix fed to the final Linear."""
        V, n = self.num_vertices, xt.shape[2]
        B = min(self.native_block_frames, n)
        C = self.feature_channels
        feats = self._workspace("features", V * C * n).view(V, C, n)
        widths = [layer.out_features for layer in self.layers[:-1]]
        mids = [self._workspace(f"mid{i % 2}", V * w * B) for i, w in enumerate(widths)]
        scratch = self._workspace("scores", 2 * V * self.heads * B)
        last = len(self.layers) - 1
        for n0 in range(0, n, B):
            n1 = min(n, n0 + B)
            h = xt[:, :, n0:n1]
            for i, layer in enumerate(self.layers):
                out = feats[:, :, n0:n1] if i == last else \
                    mids[i][:V * widths[i] * (n1 - n0)].view(V, widths[i], n1 - n0)
                h = layer._forward_native(h, self.pad_index, elu=i < last, out=out,
                                          scratch=scratch)
        return self._project(feats.view(V * C, n))

    def native_vertex_major_ok(self, x: Tensor) -> bool:
        """Whether :meth:`encode_vertex_major` can take ``x`` (inference on CPU with the fused kernel)."""
        return self._use_native(x)

    @torch.no_grad()
    def encode_vertex_major(self, xt: Tensor) -> Tensor:
        """Inference on frames already laid out vertex-major: xt (V, 3, n) -> (n, out_dim).

        Saves the transpose of :meth:`forward` when the caller can produce this layout
        directly (the decoder's output head can: W (3V × d) @ H (d × n)).
        """
        if xt.dim() != 3 or xt.shape[0] != self.num_vertices or xt.shape[1] != 3:
            raise ValueError(f"expected ({self.num_vertices}, 3, n), got {tuple(xt.shape)}")
        if not self._use_native(xt):
            return self.forward(xt.permute(2, 0, 1))
        xt = xt if xt.stride(2) == 1 and xt.stride(0) == 3 * xt.stride(1) else xt.contiguous()
        step = self.native_chunk_frames
        with self._ws_lock:
            outs = [self._encode_vm_native(xt[:, :, i:i + step]) for i in range(0, xt.shape[2], step)]
        return outs[0] if len(outs) == 1 else torch.cat(outs, 0)

    def forward(self, disp: Tensor) -> Tensor:
        """disp (..., V, 3) vertex displacements -> (..., out_dim)."""
        if disp.dim() < 2 or tuple(disp.shape[-2:]) != (self.num_vertices, 3):
            raise ValueError(f"expected (..., {self.num_vertices}, 3), got {tuple(disp.shape)}")
        lead = disp.shape[:-2]
        x = disp.reshape(-1, self.num_vertices, 3)
        if x.dtype != self.proj.weight.dtype:
            x = x.to(self.proj.weight.dtype)
        if x.shape[0] == 0:
            return x.new_zeros(*lead, self.out_dim)
        if self._use_native(x):
            step, fn = self.native_chunk_frames, self._encode_chunk_native
        else:
            step, fn = self.chunk_frames, self._encode_chunk_torch
        if fn is self._encode_chunk_native:
            with self._ws_lock:
                outs = [fn(x[i:i + step]) for i in range(0, x.shape[0], step)]
        else:
            outs = [fn(x[i:i + step]) for i in range(0, x.shape[0], step)]
        out = outs[0] if len(outs) == 1 else torch.cat(outs, 0)
        return out.reshape(*lead, self.out_dim)
