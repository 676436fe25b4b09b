"""Train a LeNet-style CNN on scikit-learn's 8x8 handwritten digits with fastconv (NumPy only).

    pip install "fastconv[examples]"      # scikit-learn, and tqdm for the progress bar
    python examples/train_digits.py       # options: --epochs --batch-size --lr --threads --seed

conv 3x3 -> ReLU -> max pool 2 -> conv 3x3 -> ReLU -> max pool 2 -> linear, trained with SGD
and momentum on 80% of the 1797 images; prints loss and accuracy per epoch.
"""
import argparse
import time

import numpy as np

import fastconv
from digits import accuracy, load_data, tqdm  # beside this script
from fastconv.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential
from fastconv.losses import CrossEntropyLoss
from fastconv.optim import SGD


def make_model(rng):
    return Sequential(
        Conv2d(1, 16, 3, padding=1, rng=rng), ReLU(), MaxPool2d(2),   # 8x8 -> 4x4
        Conv2d(16, 32, 3, padding=1, rng=rng), ReLU(), MaxPool2d(2),  # 4x4 -> 2x2
        Flatten(), Linear(32 * 2 * 2, 10, rng=rng),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=None,
                        help="fastconv threads (default: OpenMP's; on 8x8 images the work per "
                             "call is tiny and one thread is often fastest)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        fastconv.set_num_threads(args.threads)

    x_train, x_test, y_train, y_test = load_data(args.seed)
    rng = np.random.default_rng(args.seed)
    model = make_model(rng)
    criterion = CrossEntropyLoss()
    optimizer = SGD(model, lr=args.lr, momentum=0.9)
    print(model)
    print(f"{len(x_train)} training and {len(x_test)} test images, "
          f"{fastconv.get_num_threads()} threads")

    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(x_train))
        batches = range(0, len(order), args.batch_size)
        total_loss = 0.0
        for i in tqdm(batches, desc=f"epoch {epoch}", leave=False):
            batch = order[i:i + args.batch_size]
            optimizer.zero_grad()
            loss = criterion(model(x_train[batch]), y_train[batch])
            model.backward_params(criterion.backward())
            optimizer.step()
            total_loss += loss * len(batch)
        print(f"epoch {epoch:2d}  loss {total_loss / len(x_train):.4f}  "
              f"train acc {accuracy(model, x_train, y_train):.4f}  "
              f"test acc {accuracy(model, x_test, y_test):.4f}  "
              f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
