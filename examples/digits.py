"""What the digits examples share: scikit-learn's 8x8 digits as NHWC images, split 80/20,
a model's accuracy on them, and tqdm's progress bar when it is installed."""
import numpy as np

try:
    from tqdm import tqdm
except ImportError:  # no progress bar then
    def tqdm(iterable, **kwargs):
        return iterable


def load_data(seed):
    """(x_train, x_test, y_train, y_test): (N, 8, 8, 1) float32 images in [0, 1], int labels."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise SystemExit("this example needs scikit-learn: pip install 'fastconv[examples]'")
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]  # (1797, 8, 8, 1) NHWC
    return train_test_split(images, digits.target, test_size=0.2, stratify=digits.target,
                            random_state=seed)


def accuracy(model, x, y):
    """The fraction of x that the model classifies as y, in eval mode (running batch-norm
    statistics; the layers keep nothing for backward); the model is left in training mode."""
    model.eval()
    predicted = model(x).argmax(axis=1)
    model.train()
    return float(np.mean(predicted == y))
