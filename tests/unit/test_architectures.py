"""The article's five architectures, pinned: layer output shapes and parameter counts."""

import numpy as np
import pytest

from aeq.core.catalog import MODELS
from training import architectures

# Parameter counts follow from the article's layer sizes (vanilla: 784*64+64 + 64*784+784).
EXPECTED_PARAMETERS = {
    "vanilla": 101_200,
    "multilayer": 218_192,
    "conv": 4_385,
    "sparse": 101_200,
    "denoising": 28_353,
}

EXPECTED_SHAPES = {
    "vanilla": [(784,), (64,), (784,)],
    "multilayer": [(784,), (128,), (64,), (128,), (784,)],
    "conv": [
        (28, 28, 1),
        (28, 28, 16), (14, 14, 16), (14, 14, 8), (7, 7, 8), (7, 7, 8), (4, 4, 8),
        (4, 4, 8), (8, 8, 8), (8, 8, 8), (16, 16, 8), (14, 14, 16), (28, 28, 16), (28, 28, 1),
    ],
    "sparse": [(784,), (64,), (784,)],
    "denoising": [
        (28, 28, 1),
        (28, 28, 32), (14, 14, 32), (14, 14, 32), (7, 7, 32),
        (7, 7, 32), (14, 14, 32), (14, 14, 32), (28, 28, 32), (28, 28, 1),
    ],
}  # fmt: skip


def test_every_catalogued_model_has_a_builder_and_expectations():
    assert set(architectures.BUILDERS) == set(MODELS)
    assert set(EXPECTED_PARAMETERS) == set(MODELS)
    assert set(EXPECTED_SHAPES) == set(MODELS)


@pytest.mark.parametrize("name", list(MODELS))
def test_parameter_count(name):
    assert architectures.build(name).count_params() == EXPECTED_PARAMETERS[name]


@pytest.mark.parametrize("name", list(MODELS))
def test_layer_output_shapes(name):
    model = architectures.build(name)
    shapes = [tuple(layer.output.shape[1:]) for layer in model.layers]
    assert shapes == EXPECTED_SHAPES[name]


def test_sparse_code_carries_the_articles_l1_penalty():
    code = architectures.build("sparse").get_layer(architectures.CODE_LAYER)
    assert code.activity_regularizer is not None
    assert code.activity_regularizer.get_config()["l1"] == pytest.approx(1e-4)


def test_the_conv_decoder_has_exactly_one_valid_padded_convolution():
    model = architectures.build("conv")
    valid = [layer.name for layer in model.layers if getattr(layer, "padding", "same") == "valid"]
    # Pooling/upsampling layers report no padding or 'same'; only conv2_3 is valid-padded.
    assert valid == ["conv2_3"]


@pytest.mark.parametrize("name", list(MODELS))
def test_split_encoder_and_decoder_reproduce_the_autoencoder(name):
    spec = MODELS[name]
    model = architectures.build(name)
    encoder, decoder = architectures.split(model, spec)
    images = np.random.default_rng(0).random((4, *spec.input_dims), dtype=np.float32)
    codes = np.asarray(encoder(images))
    assert codes.shape == (4, spec.code_dim)
    np.testing.assert_allclose(np.asarray(decoder(codes)), np.asarray(model(images)), atol=1e-6)


def test_unknown_model_is_a_value_error():
    with pytest.raises(ValueError, match="unknown model"):
        architectures.build("resnet")
