"""The article's five autoencoders, built exactly as it defines them, in the Keras 3 functional API.

Every model names its input ``image``, the layer that produces the code ``code`` and its output
layer ``reconstruction``, so the exporter can cut it into encoder and decoder graphs by name.
Builders take only what the article leaves open (the output layer's bias initialiser, which the
training recipe may set); the layers, sizes, activations and padding are the article's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

import keras
from keras import layers, regularizers

from aeq.core.catalog import IMAGE_TENSOR, PIXELS_PER_IMAGE, ModelSpec

CODE_LAYER = "code"
OUTPUT_LAYER = "reconstruction"
# The article writes regularizers.l1(10e-5), i.e. 1e-4.
SPARSE_L1 = 10e-5

BiasInit: TypeAlias = str | keras.initializers.Initializer


def vanilla(output_bias: BiasInit = "zeros") -> keras.Model:
    """784 -> Dense(64, relu) -> Dense(784, sigmoid)."""
    image = keras.Input(shape=(PIXELS_PER_IMAGE,), name=IMAGE_TENSOR)
    code = layers.Dense(64, activation="relu", name=CODE_LAYER)(image)
    output = layers.Dense(
        PIXELS_PER_IMAGE, activation="sigmoid", bias_initializer=output_bias, name=OUTPUT_LAYER
    )(code)
    return keras.Model(image, output, name="vanilla")


def multilayer(output_bias: BiasInit = "zeros") -> keras.Model:
    """784 -> 128 -> 64 (code) -> 128 -> 784, relu inside, sigmoid out."""
    image = keras.Input(shape=(PIXELS_PER_IMAGE,), name=IMAGE_TENSOR)
    hidden_1 = layers.Dense(128, activation="relu", name="hidden_1")(image)
    code = layers.Dense(64, activation="relu", name=CODE_LAYER)(hidden_1)
    hidden_2 = layers.Dense(128, activation="relu", name="hidden_2")(code)
    output = layers.Dense(
        PIXELS_PER_IMAGE, activation="sigmoid", bias_initializer=output_bias, name=OUTPUT_LAYER
    )(hidden_2)
    return keras.Model(image, output, name="multilayer")


def conv(output_bias: BiasInit = "zeros") -> keras.Model:
    """Conv 16-8-8 with max-pooling down to a 4x4x8 code, mirrored back up.

    The decoder's third convolution is the article's one valid-padded Conv2D: it turns 16x16 into
    14x14 so the last upsampling lands on 28x28.
    """
    image = keras.Input(shape=(28, 28, 1), name=IMAGE_TENSOR)
    x = layers.Conv2D(16, (3, 3), activation="relu", padding="same", name="conv1_1")(image)
    x = layers.MaxPooling2D((2, 2), padding="same", name="pool1")(x)
    x = layers.Conv2D(8, (3, 3), activation="relu", padding="same", name="conv1_2")(x)
    x = layers.MaxPooling2D((2, 2), padding="same", name="pool2")(x)
    x = layers.Conv2D(8, (3, 3), activation="relu", padding="same", name="conv1_3")(x)
    code = layers.MaxPooling2D((2, 2), padding="same", name=CODE_LAYER)(x)
    x = layers.Conv2D(8, (3, 3), activation="relu", padding="same", name="conv2_1")(code)
    x = layers.UpSampling2D((2, 2), name="up1")(x)
    x = layers.Conv2D(8, (3, 3), activation="relu", padding="same", name="conv2_2")(x)
    x = layers.UpSampling2D((2, 2), name="up2")(x)
    x = layers.Conv2D(16, (3, 3), activation="relu", name="conv2_3")(x)
    x = layers.UpSampling2D((2, 2), name="up3")(x)
    output = layers.Conv2D(
        1,
        (3, 3),
        activation="sigmoid",
        padding="same",
        bias_initializer=output_bias,
        name=OUTPUT_LAYER,
    )(x)
    return keras.Model(image, output, name="conv")


def sparse(output_bias: BiasInit = "zeros") -> keras.Model:
    """The vanilla net with an L1 activity penalty (10e-5) on the 64-d code."""
    image = keras.Input(shape=(PIXELS_PER_IMAGE,), name=IMAGE_TENSOR)
    code = layers.Dense(
        64,
        activation="relu",
        activity_regularizer=regularizers.l1(SPARSE_L1),
        name=CODE_LAYER,
    )(image)
    output = layers.Dense(
        PIXELS_PER_IMAGE, activation="sigmoid", bias_initializer=output_bias, name=OUTPUT_LAYER
    )(code)
    return keras.Model(image, output, name="sparse")


def denoising(output_bias: BiasInit = "zeros") -> keras.Model:
    """Conv 32-32 with max-pooling to a 7x7x32 code, mirrored back up (trained on noisy input)."""
    image = keras.Input(shape=(28, 28, 1), name=IMAGE_TENSOR)
    x = layers.Conv2D(32, (3, 3), activation="relu", padding="same", name="conv1_1")(image)
    x = layers.MaxPooling2D((2, 2), padding="same", name="pool1")(x)
    x = layers.Conv2D(32, (3, 3), activation="relu", padding="same", name="conv1_2")(x)
    code = layers.MaxPooling2D((2, 2), padding="same", name=CODE_LAYER)(x)
    x = layers.Conv2D(32, (3, 3), activation="relu", padding="same", name="conv2_1")(code)
    x = layers.UpSampling2D((2, 2), name="up1")(x)
    x = layers.Conv2D(32, (3, 3), activation="relu", padding="same", name="conv2_2")(x)
    x = layers.UpSampling2D((2, 2), name="up2")(x)
    output = layers.Conv2D(
        1,
        (3, 3),
        activation="sigmoid",
        padding="same",
        bias_initializer=output_bias,
        name=OUTPUT_LAYER,
    )(x)
    return keras.Model(image, output, name="denoising")


BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "vanilla": vanilla,
    "multilayer": multilayer,
    "conv": conv,
    "sparse": sparse,
    "denoising": denoising,
}


def build(name: str, output_bias: BiasInit = "zeros") -> keras.Model:
    """Build the named autoencoder (see ``aeq.core.catalog.MODELS`` for the names)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(BUILDERS)}")
    return BUILDERS[name](output_bias=output_bias)


def split(autoencoder: keras.Model, spec: ModelSpec) -> tuple[keras.Model, keras.Model]:
    """Cut a trained autoencoder into an encoder (image -> flat code) and a decoder (flat code ->
    image) that share its weights.

    Codes are flat vectors of ``spec.code_dim`` on both sides, whatever the code layer's shape, so
    the service handles every model's codes the same way.
    """
    code_layer = autoencoder.get_layer(CODE_LAYER)
    code = code_layer.output
    if len(spec.code_dims) > 1:
        code = layers.Flatten(name="code_vector")(code)
    encoder = keras.Model(autoencoder.input, code, name=f"{spec.name}_encoder")

    code_input = keras.Input(shape=(spec.code_dim,), name="code")
    x = code_input
    if len(spec.code_dims) > 1:
        x = layers.Reshape(spec.code_dims, name="code_grid")(x)
    after_code = autoencoder.layers[autoencoder.layers.index(code_layer) + 1 :]
    for layer in after_code:
        x = layer(x)
    decoder = keras.Model(code_input, x, name=f"{spec.name}_decoder")
    return encoder, decoder
