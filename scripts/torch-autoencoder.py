"""A small convolutional autoencoder trained in PyTorch and exported to ONNX: a model made outside
aeq, for ``aeq export --onnx`` (issue 11, docs/MODEL_REPOSITORY.md#bring-your-own-onnx-model).

    pip install torch==2.13.0 onnxscript      # not an aeq dependency: this script alone needs it
    nice -n 19 python scripts/torch-autoencoder.py --data ../shared/data/mnist --out torch-ae.onnx

Trains on the MNIST training images for a time budget (default 90 s of CPU), reports the test
MSE on the 10,000 test images (pixels in [0, 1]), exports with ``torch.onnx.export`` as PyTorch
users do (an example of batch 1, so the graph's batch is fixed at 1), and prints the commands
that publish and serve it.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.data import load_mnist


@dataclass(frozen=True)
class Recipe:
    """How the model is trained."""

    seconds: float = 90.0
    batch_size: int = 128
    learning_rate: float = 2e-3
    seed: int = 0


class ConvAutoencoder(nn.Module):
    """28x28x1 -> 7x7x8 code -> 28x28x1, pixels in [0, 1] in and out (NCHW)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
            nn.Upsample(scale_factor=2), nn.Conv2d(16, 1, 3, padding=1), nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(images))


def as_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1]."""
    return torch.from_numpy(pixels.astype(np.float32) / 255.0).unsqueeze(1)


def train(model: nn.Module, images: torch.Tensor, recipe: Recipe) -> int:
    """Fit ``model`` to reconstruct ``images`` until the time budget is spent; epochs run."""
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate)
    loss_of = nn.MSELoss()
    generator = torch.Generator().manual_seed(recipe.seed)
    started, epoch = time.perf_counter(), 0
    while time.perf_counter() - started < recipe.seconds:
        epoch += 1
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), recipe.batch_size):
            batch = images[order[start : start + recipe.batch_size]]
            optimizer.zero_grad()
            loss = loss_of(model(batch), batch)
            loss.backward()
            optimizer.step()
            if time.perf_counter() - started >= recipe.seconds:
                break
        print(f"epoch {epoch}: loss {loss.item():.5f} ({time.perf_counter() - started:.0f} s)")
    return epoch


@torch.no_grad()
def test_mse(model: nn.Module, images: torch.Tensor) -> float:
    """Mean squared error over every test pixel, pixels in [0, 1]."""
    errors = [
        torch.mean((model(images[i : i + 1000]) - images[i : i + 1000]) ** 2).item()
        for i in range(0, len(images), 1000)
    ]
    return float(np.mean(errors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="MNIST IDX folder or mnist.npz")
    parser.add_argument("--out", type=Path, default=Path("torch-ae.onnx"))
    parser.add_argument("--seconds", type=float, default=Recipe.seconds)
    parser.add_argument("--threads", type=int, default=2)
    arguments = parser.parse_args()

    recipe = Recipe(seconds=arguments.seconds)
    torch.manual_seed(recipe.seed)
    torch.set_num_threads(arguments.threads)
    mnist = load_mnist(arguments.data)
    model = ConvAutoencoder()
    epochs = train(model, as_tensor(mnist.train_images), recipe)
    model.eval()
    mse = test_mse(model, as_tensor(mnist.test_images))
    # As PyTorch users export: an example batch of one, so the graph takes batches of exactly 1
    # (larger weights go to OUT.data beside it, which aeq export --onnx reads in).
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, 28, 28),),
        str(arguments.out),
        input_names=["image"],
        output_names=["reconstruction"],
    )
    print(f"trained {epochs} epoch(s) on {mnist.source}; test MSE {mse:.5f} (pixels in [0, 1])")
    print(f"exported {arguments.out}; publish and serve it:")
    print(f"  aeq export --onnx {arguments.out} --name torch-ae")
    print("  aeq reconstruct digits.npy -o reconstructed.npy --model torch-ae")


if __name__ == "__main__":
    main()
