"""Train a small ResNet with batch norm on scikit-learn's 8x8 handwritten digits (NumPy only).

    pip install "fastconv[examples]"      # scikit-learn, and tqdm for the progress bar
    python examples/train_resnet.py       # options: --epochs --batch-size --lr --threads --seed

The network: a 3x3 stem (16 channels), two residual stages of basic blocks (conv-BN-ReLU-conv-
BN plus the shortcut, then ReLU; the second stage halves the image with a strided 1x1
shortcut), global average pooling and a linear classifier; about 40k parameters. Trained with
AdamW (no weight decay on biases and batch-norm parameters), a linear warmup then cosine
decay, and gradient clipping, on 80% of the 1797 images. With the defaults (12 epochs, seed 0)
it reaches over 99% test accuracy (99.7% on an AMD EPYC with 2 threads, in about 35 s).
"""
import argparse
import time

import numpy as np

import fastconv
from digits import accuracy, load_data, tqdm  # beside this script
from fastconv.layers import AdaptiveAvgPool2d, Flatten, Linear, Sequential
from fastconv.losses import CrossEntropyLoss
from fastconv.models import basic_block, conv_bn
from fastconv.optim import AdamW, clip_grad_norm_, decay_groups
from fastconv.optim.lr_scheduler import CosineAnnealingLR, LinearLR


def make_model(rng):
    return Sequential(
        *conv_bn(1, 16, 3, rng=rng),                      # 8x8x16
        basic_block(16, 16, rng=rng), basic_block(16, 16, rng=rng),
        basic_block(16, 32, stride=2, rng=rng),           # 4x4x32
        basic_block(32, 32, rng=rng),
        AdaptiveAvgPool2d(1), Flatten(), Linear(32, 10, rng=rng),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=None,
                        help="fastconv threads (default: OpenMP's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        fastconv.set_num_threads(args.threads)

    x_train, x_test, y_train, y_test = load_data(args.seed)
    rng = np.random.default_rng(args.seed)
    model = make_model(rng)
    criterion = CrossEntropyLoss()
    optimizer = AdamW(decay_groups(model), lr=args.lr, weight_decay=0.05)
    steps_per_epoch = -(-len(x_train) // args.batch_size)
    warmup_steps = min(steps_per_epoch, args.epochs * steps_per_epoch // 4)
    warmup = LinearLR(optimizer, start_factor=0.1, total_iters=warmup_steps)
    cosine = CosineAnnealingLR(optimizer, T_max=args.epochs * steps_per_epoch)
    n_params = sum(value.size for _, value, _ in model.parameters())
    print(f"{n_params} parameters; {len(x_train)} training and {len(x_test)} test images, "
          f"{fastconv.get_num_threads()} threads")

    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(x_train))
        total_loss = 0.0
        for i in tqdm(range(0, len(order), args.batch_size), desc=f"epoch {epoch}",
                      leave=False):
            batch = order[i:i + args.batch_size]
            optimizer.zero_grad()
            loss = criterion(model(x_train[batch]), y_train[batch])
            model.backward_params(criterion.backward())
            clip_grad_norm_(model, max_norm=5.0)
            optimizer.step()
            warmup.step()
            cosine.step()
            total_loss += loss * len(batch)
        print(f"epoch {epoch:2d}  loss {total_loss / len(x_train):.4f}  "
              f"test acc {accuracy(model, x_test, y_test):.4f}  "
              f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
