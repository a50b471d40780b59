"""Every tag of the weights table, through the mirror on 127.0.0.1.

Tags whose network (with the tag's classifier) has up to ``FULL_LIMIT`` parameters run
the whole path: the publisher's file
written by the test (keras.applications' ``.h5`` pair, or Google's tarball with EMA
shadows), downloaded, verified, converted where needed, loaded; the result compared with
keras' own ``weights="imagenet"`` model (keras tags) or with the weights written (official
tags). The variants of the other tags (B3 and up, V2-B2 and up, the 21k heads: up to 481M
parameters, minutes and gigabytes each on 2 cores) check the part that differs per
variant, the names and shapes:
every layer of ours against keras.applications' layer of the mapped name (keras tags), or
against the official names derived independently in ``weights_fixtures`` (official tags).
"""

import dataclasses
from urllib.parse import urlsplit

import numpy as np
import pytest

from weights_fixtures import (images, keras_md5_slot, keras_pair, md5, official_variables,
                              weight_server, write_tarball)

import keras_effnet
from keras_effnet.port import keras_applications_model
from keras_effnet.profile import profile
from keras_effnet.weights import WEIGHTS
from keras_effnet.weights.mapping import keras_applications_names
from keras_effnet.weights.mapping import official_variables as package_names
from keras_effnet.weights.mapping import weighted_layers

FULL_LIMIT = 10_000_000
TAGS = sorted(WEIGHTS)


def _small(variant, tag):
    params = profile(variant, include_top=True, image_size=32,
                     classes=WEIGHTS[(variant, tag)].classes).params
    return params <= FULL_LIMIT


FULL = [t for t in TAGS if _small(*t)]
# Variants with no tag on the whole path (V2-B0/B1's 21k heads differ from their ft1k
# tags by the classifier's size alone).
NAMED = sorted({v for v, _ in TAGS} - {v for v, _ in FULL})


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Files the publishers would serve, written once per variant and source."""
    root = tmp_path_factory.mktemp("published")
    written = {}

    def get(row):
        key = (row.variant, row.source, row.classes)
        if key not in written:
            if row.source == "keras":
                paths = [root / row.variant / urlsplit(o).path.lstrip("/")
                         for o in (row.origin, row.origin_notop)]
                keras_pair(row.variant, *paths)
                written[key] = (None, paths)
            else:
                source = keras_effnet.build(row.variant, classes=row.classes)
                variables = official_variables(source, row.variant)
                path = write_tarball(variables, root / f"{row.variant}-{row.classes}.tar.gz")
                written[key] = (source.get_weights(), [path])
        return written[key]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("variant,tag", FULL, ids=[f"{v}:{t}" for v, t in FULL])
def test_tag_loads_through_the_mirror(variant, tag, published, tmp_path, monkeypatch):
    row = WEIGHTS[(variant, tag)]
    source_weights, paths = published(row)
    root = tmp_path / "mirror"
    origins = [row.origin] + ([row.origin_notop] if row.origin_notop else [])
    for origin, path in zip(origins, paths):
        target = root / urlsplit(origin).path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path)
    with weight_server(root, monkeypatch, tmp_path / "cache") as server:
        if row.source == "keras":
            _keras_tag(row, paths, monkeypatch)
        else:
            model = keras_effnet.build(variant, weights=tag)
            assert model.get_layer("predictions").units == row.classes
            got = model.get_weights()
            assert len(got) == len(source_weights)
            assert all(np.array_equal(a, b) for a, b in zip(got, source_weights))
        assert server.requests == [urlsplit(row.origin).path]


def _keras_tag(row, paths, monkeypatch):
    top, notop = (md5(p) for p in paths)
    monkeypatch.setitem(WEIGHTS, (row.variant, row.tag), dataclasses.replace(row, md5=(top, notop)))
    monkeypatch.setitem(*keras_md5_slot(row.variant), (top, notop))
    ours = keras_effnet.build(row.variant, weights=row.tag, classifier_activation=None)
    theirs = keras_applications_model(row.variant, weights="imagenet",
                                      classifier_activation=None)
    x = images(n=1, size=theirs.input_shape[1])
    a, b = ours.predict(x, verbose=0), theirs.predict(x, verbose=0)
    assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()


@pytest.mark.slow
@pytest.mark.parametrize("variant", NAMED)
def test_large_variant_names_and_shapes(variant):
    rows = [r for (v, _), r in WEIGHTS.items() if v == variant]
    ours = keras_effnet.build(variant)
    layers = weighted_layers(ours)
    shapes = {x.name: [tuple(w.shape) for w in x.weights] for x in ours.layers if x.weights}
    if any(r.source == "keras" for r in rows):
        theirs = keras_applications_model(variant)
        by_name = {x.name: [tuple(w.shape) for w in x.weights] for x in theirs.layers
                   if x.weights and type(x).__name__ != "Normalization"}
        names = keras_applications_names([x.name for x in layers],
                                         "v2" if "v2" in variant else "v1")
        assert sorted(names.values()) == sorted(by_name)
        assert all(by_name[names[n]] == shapes[n] for n in names)
    if any(r.source == "official" for r in rows):
        expected = official_variables(ours, variant)
        mapped = package_names(layers, variant)
        assert sorted(v for names in mapped.values() for v in names) == sorted(expected)
        assert all(tuple(expected[v].shape) == s for n, names in mapped.items()
                   for v, s in zip(names, shapes[n]))
