import numpy as np
import pytest

from useg.cluster import assign, fit_kmeans, hungarian_match, many_to_one_match
from useg.cluster.kmeans import l2_normalise, reservoir_sample


def blobs(seed=0, per=200, dim=16, k=4):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (k, dim))
    truth = np.repeat(np.arange(k), per)
    return (centres[truth] + rng.normal(0, 0.5, (k * per, dim))).astype(np.float32), truth


def test_kmeans_recovers_a_known_clustering():
    x, truth = blobs()
    result = fit_kmeans(x, 4, niter=20, seed=0, nredo=5)
    labels, _ = assign(x, result.centroids)
    confusion = np.zeros((4, 4), int)
    np.add.at(confusion, (truth, labels), 1)
    assert (confusion > 0).sum() == 4, "each true cluster maps to exactly one found cluster"


def test_kmeans_is_deterministic_for_a_seed():
    x, _ = blobs(seed=1, k=6)
    a, b = fit_kmeans(x, 6, seed=3), fit_kmeans(x, 6, seed=3)
    assert np.array_equal(a.centroids, b.centroids)


def test_spherical_kmeans_gives_unit_centroids():
    x, _ = blobs()
    result = fit_kmeans(l2_normalise(x), 4, seed=0, spherical=True)
    np.testing.assert_allclose(np.linalg.norm(result.centroids, axis=1), 1, rtol=1e-5)


def test_batched_assignment_equals_one_pass():
    x, _ = blobs()
    c = fit_kmeans(x, 4, seed=0).centroids
    full, _ = assign(x, c, batch_size=len(x))
    small, dist = assign(x, c, batch_size=7)
    assert np.array_equal(full, small)
    np.testing.assert_allclose(dist, ((x - c[small]) ** 2).sum(1), rtol=1e-4, atol=1e-3)


def test_too_few_points_is_an_error_naming_the_key():
    from useg.errors import ConfigError

    with pytest.raises(ConfigError, match="kmeans.k: 5 clusters need at least 5 points.*only 3: lower kmeans.k"):
        fit_kmeans(np.zeros((3, 2), np.float32), 5, key="kmeans.k")


def test_reservoir_sample_takes_the_cap_deterministically_from_a_stream():
    rows = np.arange(1000, dtype=np.float32)[:, None]
    chunks = lambda: (rows[i : i + 64] for i in range(0, 1000, 64))  # noqa: E731
    a = reservoir_sample(chunks(), 1000, 100, seed=0)
    b = reservoir_sample(chunks(), 1000, 100, seed=0)
    assert len(a) == 100 and len(np.unique(a)) == 100 and np.array_equal(a, b)
    assert a.min() < 200 and a.max() > 800, "the sample spans the whole stream"
    assert len(reservoir_sample(chunks(), 1000, 5000, seed=0)) == 1000


def test_hungarian_match_is_one_to_one_and_optimal():
    # rows: classes, columns: clusters
    confusion = np.array([[1, 9, 0], [8, 2, 0], [0, 0, 5]])
    assert hungarian_match(confusion).tolist() == [1, 0, 2]


def test_hungarian_leaves_extra_clusters_unmatched_and_many_to_one_merges_them():
    confusion = np.array([[10, 0, 6], [0, 7, 1]])
    assert hungarian_match(confusion).tolist() == [0, 1, -1]
    assert many_to_one_match(confusion).tolist() == [0, 1, 0]


def test_kmeans_plus_plus_seeds_one_centre_per_separated_blob():
    from useg.cluster.kmeans import kmeans_plus_plus

    x, truth = blobs(k=6, per=50)
    seeds = kmeans_plus_plus(x, 6, np.random.default_rng(0))
    nearest_blob = {int(truth[np.argmin(((x - c) ** 2).sum(1))]) for c in seeds}
    assert nearest_blob == set(range(6)), "D^2 sampling does not pick two seeds in one far-apart blob"
