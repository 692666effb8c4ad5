"""Targets and materialized sources: validation, determinism, ER(p) masks (docs/math.md §1)."""
import numpy as np
import pytest

from construct.source import sample_source
from construct.targets import load_target, make_target, parse_box, random_target, target_forward
from theory.testing import assert_binomial


def test_random_target_seeded_and_scaled():
    a = random_target((5, 4, 3), 7)
    b = random_target((5, 4, 3), 7)
    c = random_target((5, 4, 3), 8)
    assert all(np.array_equal(x, y) for x, y in zip(a.weights, b.weights))
    assert not np.array_equal(a.weights[0], c.weights[0])
    assert np.max(np.abs(a.weights[0])) <= 1 / np.sqrt(5)
    assert np.max(np.abs(a.weights[1])) <= 1 / np.sqrt(4)
    sparse = random_target((50, 40, 3), 1, target_density=0.3)
    frac = np.count_nonzero(sparse.weights[0]) / sparse.weights[0].size
    assert_binomial(np.count_nonzero(sparse.weights[0]), sparse.weights[0].size, 0.3, alpha=1e-3)
    assert not random_target((3, 2), 1, biases=False).has_biases


@pytest.mark.parametrize("weights, biases, fragment", [
    ([np.array([[np.nan, 1.0]])], None, "NaN"),
    ([np.ones((3, 2)), np.ones((2, 4))], None, "inputs"),
    ([np.ones((3, 2))], [np.ones(2)], "shape"),
    ([np.ones(3)], None, "2-D"),
    ([np.ones((3, 2))], [np.array([0.0, np.inf, 1.0])], "inf"),
])
def test_make_target_rejects(weights, biases, fragment):
    with pytest.raises(ValueError, match=fragment):
        make_target(weights, biases)


def test_load_target_specs(tmp_path):
    with pytest.raises(ValueError):
        load_target("random:5")
    with pytest.raises(ValueError):
        load_target("random:5,x")
    with pytest.raises(FileNotFoundError):
        load_target(str(tmp_path / "missing.npz"))
    t = random_target((3, 2), 1)
    np.savez(tmp_path / "t.npz", target_W1=t.weights[0], target_b1=t.biases[0])
    assert np.array_equal(load_target(str(tmp_path / "t.npz")).weights[0], t.weights[0])
    assert parse_box("-2,3") == (-2.0, 3.0)
    for bad in ("1,1", "a,b", "1", "nan,1"):
        with pytest.raises(ValueError, match="box"):
            parse_box(bad)


def test_torch_state_dict_target(tmp_path):
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).double()
    torch.save(net.state_dict(), tmp_path / "m.pt")
    with pytest.raises(ValueError, match="state_dict alone"):  # names do not say the layer order
        load_target(str(tmp_path / "m.pt"))
    (tmp_path / "arch.json").write_text('{"layers": [{"kind": "linear", "name": "0"}, {"kind": "relu"}, '
                                        '{"kind": "linear", "name": "2"}]}')
    t = load_target(str(tmp_path / "arch.json"), weights=str(tmp_path / "m.pt"))
    x = np.random.default_rng(0).uniform(-1, 1, (8, 3))
    np.testing.assert_allclose(target_forward(t, x), net(torch.as_tensor(x)).detach().numpy(), rtol=1e-12, atol=1e-12)


def test_source_deterministic_and_bernoulli():
    a = sample_source((30, 400, 20), [0.3, 0.7], 5)
    b = sample_source((30, 400, 20), [0.3, 0.7], 5)
    for x, y in zip(a.weights + a.masks + a.biases, b.weights + b.masks + b.biases):
        assert np.array_equal(x, y)
    c = sample_source((30, 400, 20), [0.3, 0.7], 6)
    assert not np.array_equal(a.masks[0], c.masks[0])
    for m, p in zip(a.masks, (0.3, 0.7)):
        assert_binomial(int(m.sum()), m.size, p, alpha=1e-3)
    w = a.weights[0]
    assert w.dtype == np.float32 and np.all(np.abs(w) <= 1)
    # U[-1, 1]: the fraction of negatives is Bin(N, 1/2)
    assert_binomial(int((w < 0).sum()), w.size, 0.5, alpha=1e-3)
    with pytest.raises(ValueError, match="1.5"):
        sample_source((3, 4), [1.5], 0)
    with pytest.raises(ValueError, match="densities"):
        sample_source((3, 4, 5), [0.5, 0.5, 0.5], 0)


def test_drawn_blocks_equal_the_materialized_layer(monkeypatch):
    """take_rows / gather / kept_count of a drawn layer (several blocks) equal the materialized arrays, with one
    thread or several; the block scheme keeps masks independent of weights (Bernoulli per entry)."""
    import construct.source as source_mod

    shape = (3000, 2000)  # 2^22 // 2000 = 2097 rows per block: two blocks
    full = sample_source((shape[1], shape[0]), [0.4], 11).layers[0]
    assert full.n_blocks == 2
    W, M = full.weights, full.mask
    rng = np.random.default_rng(0)
    rows = rng.integers(0, shape[0], 500)
    cols = rng.integers(0, shape[1], 500)
    for threads in (1, 2):
        monkeypatch.setattr(source_mod, "_threads", lambda: threads)
        lazy = sample_source((shape[1], shape[0]), [0.4], 11).layers[0]
        w, m = lazy.gather(rows, cols)
        assert np.array_equal(w, W[rows, cols]) and np.array_equal(m, M[rows, cols])
        w_only, none = lazy.gather(rows[::-1], cols[::-1], with_mask=False)
        assert none is None and np.array_equal(w_only, W[rows[::-1], cols[::-1]])
        pick = np.array([2999, 0, 2096, 2097, 5])
        w, m = lazy.take_rows(pick)
        assert np.array_equal(w, W[pick]) and np.array_equal(m, M[pick])
        assert not lazy.materialized
        assert lazy.kept_count() == int(M.sum())
        assert np.array_equal(lazy.bias, full.bias)
    assert_binomial(int(M.sum()), M.size, 0.4, alpha=1e-3)
    # a mask entry does not depend on its weight: P(M = 1 | W < 0) is still 0.4
    assert_binomial(int(M[W < 0].sum()), int((W < 0).sum()), 0.4, alpha=1e-3)
