"""Blendshape bases and the bounded least-squares weight solve."""

import numpy as np
import pytest

from ptalker_cli.blendshapes import (
    Blendshapes,
    BlendshapeSolver,
    load_blendshapes,
    load_builtin_blendshapes,
    solve_weights,
)
from ptalker_cli.blendshapes.solve import dct2, idct2, path_laplacian_eigenvalues
from ptalker_cli.errors import MeshError, PtalkerError
from ptalker_cli.mesh import load_builtin


@pytest.fixture(scope="module")
def ict():
    return load_builtin("ict"), load_builtin_blendshapes("ict")


def smooth_weights(T, K, seed=0, fps=25.0):
    """Speech-like curves in [0, 1]: slow sines, clipped so that 0 and 1 are both hit, some shapes idle."""
    rng = np.random.default_rng(seed)
    t = np.arange(T)[:, None] / fps
    w = 0.45 + 0.7 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5, K) * t + rng.uniform(0, 6, K))
    w = np.clip(w, 0.0, 1.0)
    w[:, rng.choice(K, K // 3, replace=False)] = 0.0
    return w.astype(np.float32)


def test_ict_basis_ships_with_the_template(ict):
    topo, basis = ict
    assert basis.num_shapes == 45 and basis.num_vertices == topo.num_vertices
    assert {"jawOpen", "eyeBlink_L", "browInnerUp_R", "cheekPuff_L", "mouthClose"} <= set(basis.names)
    jaw = basis.offsets[basis.index("jawOpen")]
    lip = topo.region("lip")
    assert np.linalg.norm(jaw[lip], axis=1).mean() > 1.0  # cm: jawOpen moves the lips


def test_synth_head_uses_the_same_rows_as_the_basis(ict):
    from ptalker_cli.data.synth.head import GENERATOR_SHAPES, load_head

    head = load_head()
    assert head.shape_names == GENERATOR_SHAPES
    for k, name in enumerate(GENERATOR_SHAPES):
        assert np.array_equal(head.shape_offsets[k], ict[1].offsets[ict[1].index(name)])


def test_dct_is_the_orthonormal_dct2_and_diagonalizes_the_path_laplacian():
    rng = np.random.default_rng(1)
    for T in (1, 2, 3, 8, 33):
        n = np.arange(T)
        C = np.cos(np.pi * n[:, None] * (2 * n[None, :] + 1) / (2 * T))
        C[0] *= np.sqrt(1 / T)
        C[1:] *= np.sqrt(2 / T)
        x = rng.standard_normal((4, T))
        assert np.allclose(dct2(x), x @ C.T, atol=1e-12)
        assert np.allclose(idct2(dct2(x)), x, atol=1e-12)
        L = 2 * np.eye(T) - np.eye(T, k=1) - np.eye(T, k=-1)
        L[0, 0] = L[-1, -1] = 1 if T > 1 else 0
        assert np.allclose(C @ L @ C.T, np.diag(path_laplacian_eigenvalues(T)), atol=1e-12)


def test_round_trip_recovers_known_weights_within_0_02(ict):
    """Motion made from known weights, on a template that is not the basis's neutral, is solved back."""
    topo, basis = ict
    rng = np.random.default_rng(3)
    template = topo.vertices + rng.normal(0, 0.2, topo.vertices.shape).astype(np.float32)  # another identity
    w = smooth_weights(200, basis.num_shapes)
    res = solve_weights(basis.pose(template, w), template, basis)  # default settings
    assert res.converged
    err = np.abs(res.weights - w)
    assert err.max() <= 0.02, (err.max(), basis.names[int(err.max(0).argmax())])
    assert res.weights.min() >= 0.0 and res.weights.max() <= 1.0


def test_round_trip_with_temporal_smoothness(ict):
    """Smoothing biases corners (where the curves clip at 0 or 1) a little; a light touch keeps 0.02."""
    topo, basis = ict
    w = smooth_weights(150, basis.num_shapes, seed=5)
    res = solve_weights(basis.pose(topo.vertices, w), topo.vertices, basis, smoothness=1e-4)
    assert np.abs(res.weights - w).max() <= 0.02


def test_weights_stay_in_the_unit_box(ict):
    topo, basis = ict
    j, b = basis.index("jawOpen"), basis.index("eyeBlink_L")
    w = np.zeros((3, basis.num_shapes), np.float32)
    w[0, j], w[1, j], w[2, b] = 1.6, -0.8, 0.5
    res = solve_weights(basis.pose(topo.vertices, w), topo.vertices, basis)
    assert res.weights[0, j] == pytest.approx(1.0, abs=1e-4)
    assert res.weights[1, j] == pytest.approx(0.0, abs=1e-4)
    assert res.weights[2, b] == pytest.approx(0.5, abs=0.01)


def _small_problem(seed, K=6, V=40, T=30):
    rng = np.random.default_rng(seed)
    offsets = rng.standard_normal((K, V, 3)).astype(np.float32)
    offsets[1] = offsets[0] + 0.05 * offsets[1]  # two nearly equal shapes, as L/R pairs are
    basis = Blendshapes(tuple(f"s{k}" for k in range(K)), offsets)
    template = rng.standard_normal((V, 3)).astype(np.float32)
    verts = template + rng.standard_normal((T, V, 3)).astype(np.float32) * 1.5  # not reachable exactly
    return basis, template, verts


@pytest.mark.parametrize("smoothness", [0.0, 0.05])
def test_solution_satisfies_the_kkt_conditions_of_the_documented_objective(smoothness):
    """Independent of the algorithm: at the optimum of the box QP, the gradient of
    Σ‖Bw−d‖²/N + e·r·‖W‖² + e·s·Σ‖Δw‖² is 0 on free weights, ≥ 0 at 0 and ≤ 0 at 1."""
    basis, template, verts = _small_problem(7)
    reg = 1e-3
    res = BlendshapeSolver(basis, reg, smoothness).solve(verts, template, tol=1e-7, max_iter=20000)
    assert res.converged
    W = res.weights.astype(np.float64)
    K, V = basis.num_shapes, basis.num_vertices
    B = basis.offsets.reshape(K, -1).T.astype(np.float64)
    D = (verts - template).reshape(len(verts), -1).astype(np.float64)
    e = np.trace(B.T @ B / V) / K
    T = len(W)
    L = 2 * np.eye(T) - np.eye(T, k=1) - np.eye(T, k=-1)
    L[0, 0] = L[-1, -1] = 1
    grad = 2 * ((W @ B.T - D) @ B / V + e * reg * W + e * smoothness * (L @ W))
    scale = np.abs(grad).max() + 1.0
    free = (W > 1e-4) & (W < 1 - 1e-4)
    assert np.abs(grad[free]).max() < 2e-3 * scale
    assert (grad[W <= 1e-4] > -2e-3 * scale).all()
    assert (grad[W >= 1 - 1e-4] < 2e-3 * scale).all()
    assert free.any() and (~free).any()  # the box is active somewhere, so the test means something


def test_smoothness_damps_frame_to_frame_jitter(ict):
    """A held pose seen through per-vertex noise: smoothing removes most of the weights' jitter."""
    topo, basis = ict
    rng = np.random.default_rng(11)
    w = np.repeat(smooth_weights(1, basis.num_shapes, seed=2) * 0.8 + 0.1, 80, axis=0)
    noisy = basis.pose(topo.vertices, w) + rng.normal(0, 0.05, (80, topo.num_vertices, 3)).astype(np.float32)
    rough = solve_weights(noisy, topo.vertices, basis, smoothness=0.0).weights
    smooth = solve_weights(noisy, topo.vertices, basis, smoothness=0.05).weights
    jitter = lambda x: np.abs(np.diff(x, axis=0)).mean()  # noqa: E731
    assert jitter(smooth) < 0.3 * jitter(rough), (jitter(smooth), jitter(rough))


def test_user_basis_from_npz_and_errors(tmp_path, ict):
    topo, basis = ict
    sub = basis.subset(["jawOpen", "eyeBlink_L"])
    path = sub.save(tmp_path / "basis.npz")
    back = load_blendshapes(path)
    assert back.names == ("jawOpen", "eyeBlink_L") and np.array_equal(back.offsets, sub.offsets)
    np.savez(tmp_path / "bad.npz", names=np.array(["a"]), offsets=np.zeros((2, 5, 3)))
    with pytest.raises(MeshError, match="shape"):
        load_blendshapes(tmp_path / "bad.npz")
    with pytest.raises(MeshError, match="vertices"):
        solve_weights(np.zeros((2, 10, 3)), np.zeros((10, 3)), back)
    with pytest.raises(PtalkerError, match=">= 0"):
        BlendshapeSolver(back, regularization=-1)


def test_user_basis_from_gltf_morph_targets_is_rescaled_to_the_template(tmp_path):
    """A basis exported as glTF morph targets (metres) on a centimetre topology."""
    pygltflib = pytest.importorskip("pygltflib")
    from ptalker_cli.mesh import tiny_topology

    topo = tiny_topology()
    V = topo.num_vertices
    rng = np.random.default_rng(0)
    offsets_cm = rng.normal(0, 0.3, (2, V, 3)).astype(np.float32)
    base_m = (topo.vertices / 100).astype(np.float32)
    blobs = [base_m.tobytes()] + [(o / 100).astype(np.float32).tobytes() for o in offsets_cm]
    data = b"".join(blobs)
    views = [pygltflib.BufferView(buffer=0, byteOffset=k * V * 12, byteLength=V * 12) for k in range(3)]
    accs = [pygltflib.Accessor(bufferView=k, componentType=pygltflib.FLOAT, count=V, type=pygltflib.VEC3,
                               min=[-1, -1, -1], max=[1, 1, 1]) for k in range(3)]
    gltf = pygltflib.GLTF2(
        scene=0, scenes=[pygltflib.Scene(nodes=[0])], nodes=[pygltflib.Node(mesh=0)],
        meshes=[pygltflib.Mesh(primitives=[pygltflib.Primitive(attributes=pygltflib.Attributes(POSITION=0),
                                                               targets=[{"POSITION": 1}, {"POSITION": 2}])],
                               extras={"targetNames": ["jawOpen", "eyeBlink_L"]})],
        accessors=accs, bufferViews=views, buffers=[pygltflib.Buffer(byteLength=len(data))])
    gltf.set_binary_blob(data)
    gltf.save_binary(str(tmp_path / "basis.glb"))
    b = load_blendshapes(tmp_path / "basis.glb", topo.vertices)
    assert b.names == ("jawOpen", "eyeBlink_L")
    assert np.allclose(b.offsets, offsets_cm, atol=1e-5)
