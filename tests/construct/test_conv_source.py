"""The conv source's drawing scheme (docs/math.md §9 "Drawing the source"): position-keyed SplitMix64 entries of
B layers, per-run streams of A's dedicated entries; determinism, laws and the compiled kernels against numpy."""
import numpy as np
import pytest
from scipy.stats import binomtest, kstest

from construct.conv_source import CounterLayer, IntermediateLayer, sample_conv_source, splitmix_reference


def test_compiled_kernels_equal_the_numpy_reference():
    layer = CounterLayer(50, 300, 0.4, seed=7, index=2)
    w, m = layer.take_rows(np.arange(50))
    counters = (np.arange(50, dtype=np.uint64)[:, None] * np.uint64(300) + np.arange(300, dtype=np.uint64)[None])
    zw = splitmix_reference(layer._key_w, counters)
    ref_w = (zw >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -23) - np.float32(1.0)
    zm = splitmix_reference(layer._key_m, counters)
    ref_m = (zm >> np.uint64(11)).astype(np.float64) * 2.0 ** -53 < 0.4
    assert np.array_equal(w, ref_w) and np.array_equal(m, ref_m)


def test_float64_layers_refine_the_float32_numbers():
    w32 = CounterLayer(20, 40, 0.5, seed=3, index=4).weights.astype(np.float64)
    w64 = CounterLayer(20, 40, 0.5, seed=3, index=4, dtype="float64").weights
    assert w64.dtype == np.float64 and np.all(w64 >= w32) and np.all(w64 - w32 < 2.0 ** -23)
    assert np.mean(w64 != w32) > 0.99


def test_mask_is_bernoulli_and_weights_uniform():
    layer = CounterLayer(200, 1000, 0.3, seed=11, index=6)
    w, m = layer.take_rows(np.arange(200))
    assert binomtest(int(m.sum()), m.size, 0.3).pvalue > 1e-3
    assert kstest(w.ravel()[:20000].astype(np.float64), "uniform", args=(-1, 2)).pvalue > 1e-3
    assert np.all(w >= -1) and np.all(w < 1)
    # entries of different rows / layers / seeds are different streams
    other = CounterLayer(200, 1000, 0.3, seed=12, index=6).take_rows([0])[0]
    assert np.mean(other[0] == w[0]) < 0.01


def test_gather_equals_take_rows_and_same_seed_same_numbers():
    a = CounterLayer(30, 70, 0.6, seed=5, index=2)
    b = CounterLayer(30, 70, 0.6, seed=5, index=2)
    rows = np.array([0, 29, 13, 13])
    cols = np.array([69, 0, 5, 6])
    w, m = a.gather(rows, cols)
    full_w, full_m = b.take_rows(np.arange(30))
    assert np.array_equal(w, full_w[rows, cols]) and np.array_equal(m, full_m[rows, cols])


def test_dedicated_entries_are_drawn_per_run_and_reproducible():
    a = IntermediateLayer(10, 7, 3, 0.5, seed=2, index=1)
    b = IntermediateLayer(10, 7, 3, 0.5, seed=2, index=1)
    (wa, ma), (wb, mb) = a.diagonal(), b.diagonal()
    assert wa.shape == (70,) and np.array_equal(wa, wb) and np.array_equal(ma, mb)
    assert a.shape == (73, 10) and a.bias.shape == (73,)


@pytest.mark.parametrize("density", [1.0, 0.25])
def test_sample_conv_source_shapes_and_densities(density):
    src = sample_conv_source([(9, 4, 5, 2), (36, 3, 6, 0)], [density] * 4, seed=1)
    (a1, b1), (a2, b2) = src.pairs
    assert a1.shape == (47, 9) and b1.shape == (4, 47) and a2.shape == (216, 36) and b2.shape == (3, 216)
    assert src.params == 47 * 9 + 4 * 47 + 216 * 36 + 3 * 216
    assert src.densities == (density,) * 4
