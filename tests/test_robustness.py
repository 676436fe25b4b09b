"""Robustness: Python threads, processes (spawn / forkserver / fork), and memory leaks."""
import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import fastconv
import reference
from conftest import assert_close, assert_threads_ran
from fastconv import filters, losses

# ----------------------------------------------------------------------------------------------
# threads


def _arrays(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 13, 11, 8)).astype(np.float32)
    w = rng.standard_normal((3, 3, 8, 12)).astype(np.float32)
    dw = rng.standard_normal((3, 3, 1, 8)).astype(np.float64)
    b = rng.standard_normal(12).astype(np.float32)
    return x, w, dw, b


def _tasks():
    """{name: call}, a mix of kernels, dtypes and layers (one layer shared by every thread,
    in eval mode, whose forward keeps no state)."""
    x, w, dw, b = _arrays()
    y = fastconv.conv2d(x, w, b, padding=1)
    shared = fastconv.Conv2d(8, 12, 3, padding=1, rng=0).eval()
    return {
        "conv2d direct": lambda: fastconv.conv2d(x, w, b, padding=1, algorithm="direct"),
        "conv2d im2col": lambda: fastconv.conv2d(x, w, b, stride=2, padding="same",
                                                 algorithm="im2col"),
        "conv2d depthwise float64": lambda: fastconv.conv2d(x.astype(np.float64), dw,
                                                            padding=2, dilation=2, groups=8),
        "conv2d_backward": lambda: fastconv.conv2d_backward(y, x, w, padding=1),
        "conv_transpose2d": lambda: fastconv.conv_transpose2d(y, w, b[:8], stride=2),
        "max_pool2d": lambda: fastconv.max_pool2d(x, 3, stride=2, padding=1,
                                                  return_indices=True),
        "avg_pool2d_backward": lambda: fastconv.avg_pool2d_backward(
            np.ones((2, 6, 5, 8), np.float32), x, 2),
        "shared eval layer": lambda: shared(x),
        "own layer": lambda: fastconv.Conv2d(8, 12, 3, padding=1, rng=1)(x),
    }


def _same(a, b) -> bool:
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(p, q) for p, q in zip(a, b))
    if a is None or b is None:
        return a is b
    return a.dtype == b.dtype and np.array_equal(a, b)


def test_serial_results_are_right():
    """The results the threaded test compares against are themselves correct."""
    x, w, _, b = _arrays()
    want = reference.conv2d(x, w, b, pads=((1, 1), (1, 1)))
    assert_close(_tasks()["conv2d direct"](), want, np.float32, 9 * 8)


def test_many_python_threads_at_once_give_the_serial_results():
    """Every task run 6 times, from 8 threads at once, in a shuffled order: each result is
    bit for bit the one computed alone (no shared scratch, no state kept across calls)."""
    tasks = _tasks()
    expected = {name: call() for name, call in tasks.items()}
    order = [name for name in tasks for _ in range(6)]
    np.random.default_rng(1).shuffle(order)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda name: (name, tasks[name]()), order))
    wrong = sorted({name for name, result in results if not _same(result, expected[name])})
    assert not wrong, f"different results under threads: {wrong}"


def test_threads_with_different_thread_counts_give_the_same_results(kernel_threads):
    x, w, _, b = _arrays()
    expected = fastconv.conv2d(x, w, b, padding=1)

    def run(n):
        with fastconv.num_threads(n):
            return fastconv.conv2d(x, w, b, padding=1)

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(run, [1, 2, 3, 1, 2, 3]))
    finally:
        fastconv.set_num_threads(None)  # see the next test
    assert_threads_ran(kernel_threads)
    assert all(np.array_equal(r, expected) for r in results)


def test_overlapping_num_threads_blocks_in_two_threads_restore_the_setting():
    """Thread A enters num_threads(n + 1), thread B enters num_threads(n + 2), A leaves, B
    leaves: afterwards the process must be back at its own setting n. (Each block saves and
    restores one process-wide value, so B restores the n + 1 that A had set, and it stays.)"""
    fastconv.set_num_threads(None)
    before = fastconv.get_num_threads()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def a():
        with fastconv.num_threads(before + 1):
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def b():
        a_in.wait(10)
        with fastconv.num_threads(before + 2):
            b_in.set()
            a_out.wait(10)

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        after = fastconv.get_num_threads()
    finally:
        fastconv.set_num_threads(None)  # don't leave the damage to the other tests
    assert after == before, f"thread count {after} after both blocks ended, was {before}"


class _Watched:
    """A kernel module whose functions set state["busy"] while the compiled code runs."""

    def __init__(self, module, state):
        self._module, self._state = module, state

    def __getattr__(self, name):
        attr = getattr(self._module, name)
        if not callable(attr):
            return attr

        def call(*args):
            self._state["busy"] = True
            try:
                return attr(*args)
            finally:
                self._state["busy"] = False
        return call


@pytest.mark.parametrize("kernel", ["direct", "im2col", "direct weight gradient", "max pool"])
def test_kernels_release_the_gil(kernel, monkeypatch):
    """With a switch interval of minutes, the worker thread keeps the GIL until it releases
    it itself; the main thread, polling, can see the worker inside a compiled kernel only if
    the kernel released the GIL."""
    from fastconv import _algorithms, pooling

    state = {"busy": False}
    for algo in ("direct", "im2col"):
        monkeypatch.setitem(_algorithms.KERNELS, algo, _Watched(_algorithms.KERNELS[algo], state))
    monkeypatch.setattr(pooling, "_pool", _Watched(pooling._pool, state))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 64, 64, 32)).astype(np.float32)
    w = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
    big = rng.standard_normal((8, 128, 128, 32)).astype(np.float32)
    calls = {
        "direct": lambda: fastconv.conv2d(x, w, padding=1, algorithm="direct"),
        "im2col": lambda: fastconv.conv2d(x, w, padding=1, algorithm="im2col"),
        "direct weight gradient": lambda: fastconv.conv2d_backward(
            x, x, w, padding=1, needs=("weight",), algorithm="direct"),
        "max pool": lambda: fastconv.max_pool2d(big, 3, stride=1, padding=1),
    }

    def worker():
        with fastconv.num_threads(1):  # tens of milliseconds per call
            for _ in range(3):
                calls[kernel]()

    seen_busy = False
    interval = sys.getswitchinterval()
    sys.setswitchinterval(300.0)
    try:
        t = threading.Thread(target=worker)
        t.start()
        while t.is_alive():
            seen_busy = seen_busy or state["busy"]
            time.sleep(0.001)  # lets the worker have the GIL back
        t.join()
    finally:
        sys.setswitchinterval(interval)
    assert seen_busy, "the main thread never ran while the kernel was busy"


# ----------------------------------------------------------------------------------------------
# processes: each scenario runs in a fresh interpreter, under a timeout (a deadlock fails)

PROCESS_SCRIPT = textwrap.dedent("""
    import multiprocessing as mp
    import sys

    import numpy as np

    import fastconv

    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, 40, 40, 16)).astype(np.float32)
    W = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)


    def work(seed):
        x = np.roll(X, seed, axis=1)
        return fastconv.conv2d(x, W, padding=1), fastconv.max_pool2d(x, 2)


    if __name__ == "__main__":
        method, one_thread = sys.argv[1], sys.argv[2] == "1"
        expected = [work(seed) for seed in range(6)]  # the parent uses its OpenMP threads first
        assert fastconv.get_num_threads() >= 1
        setup = dict(initializer=fastconv.set_num_threads, initargs=(1,)) if one_thread else {}
        with mp.get_context(method).Pool(2, **setup) as pool:
            results = pool.map(work, range(6))
        for (y, p), (y0, p0) in zip(results, expected):
            assert np.array_equal(y, y0) and np.array_equal(p, p0)
        print("OK", method, len(results))
""")


def _run_processes(tmp_path, method: str, one_thread: bool):
    import multiprocessing as mp

    if method not in mp.get_all_start_methods():
        pytest.skip(f"no {method} start method on this platform")
    script = tmp_path / "scenario.py"
    script.write_text(PROCESS_SCRIPT)
    # the fastconv under test (a source tree or an installed wheel) for the child processes
    path = [str(Path(fastconv.__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    try:
        run = subprocess.run([sys.executable, str(script), method, "1" if one_thread else "0"],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{method}: no result in 120 s (deadlock)")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"OK {method} 6" in run.stdout


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_multiprocessing_spawn_and_forkserver(tmp_path, method):
    _run_processes(tmp_path, method, one_thread=False)


def test_fork_after_use_with_one_thread_in_the_children(tmp_path):
    """The documented setup for fork: libgomp's thread pool does not survive fork(), so
    children that start with fastconv.set_num_threads(1) never touch it and cannot hang."""
    _run_processes(tmp_path, "fork", one_thread=True)


FORK_IN_BLOCK_SCRIPT = textwrap.dedent("""
    import os
    import numpy as np
    import fastconv

    x = np.random.default_rng(0).standard_normal((64, 32, 32, 16)).astype(np.float32)
    fastconv.batch_norm(x, None, None, training=True)  # the parent's OpenMP team runs
    with fastconv.num_threads(2):
        pid = os.fork()
        if pid == 0:  # the child: one thread, whatever block the parent was in
            ok = fastconv.get_num_threads() == 1
            fastconv.batch_norm(x, None, None, training=True)
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
    print("child", os.waitstatus_to_exitcode(status))
""")


def test_fork_inside_a_num_threads_block_gives_a_child_on_one_thread(tmp_path):
    """A child forked inside num_threads(2) runs on one thread (its copy of the block's
    setting would make its first parallel region wait for a thread fork() did not copy)."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    script = tmp_path / "fork_in_block.py"
    script.write_text(FORK_IN_BLOCK_SCRIPT)
    path = [str(Path(fastconv.__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    try:
        run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("no result in 60 s: the forked child hung")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "child 0" in run.stdout, run.stdout + run.stderr


# ----------------------------------------------------------------------------------------------
# leaks: many calls of every public function keep the memory flat. By default a lean check of
# what Python allocates (tracemalloc: NumPy reports its array buffers to it); the heavy run
# (pytest -m heavy) also watches the resident memory over thousands of calls, which sees
# what the compiled kernels malloc.

TRACED_CALLS = 200
TRACED_TOLERANCE = 64 * 2**10  # bytes; one leaked result per call would be >= 200 KiB
LEAK_BATCHES, LEAK_BATCH_CALLS = 4, int(os.environ.get("FASTCONV_LEAK_CALLS", "1500"))
LEAK_TOLERANCE = 4 * 2**20  # bytes; one leaked result per call would be >= 12 MB


def _rss() -> int | None:
    """Resident set size in bytes (None where it cannot be read)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        pass
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def _leak_calls():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 8, 8, 4)).astype(np.float32)     # 1 KiB: a leaked array shows
    w = rng.standard_normal((3, 3, 4, 8)).astype(np.float32)
    y = fastconv.conv2d(x, w, padding=1)
    x1, w1, y1 = x[:, 0], w[0], y[:, 0]
    pooled_grad = np.ones((1, 4, 4, 4), np.float32)
    logits, labels = rng.standard_normal((16, 10)), rng.integers(0, 10, 16)
    layer = fastconv.Conv2d(4, 8, 3, padding=1, rng=0)
    image = rng.integers(0, 255, (16, 16, 3)).astype(np.uint8)

    def layer_round_trip():
        layer.backward(layer(x))

    def thread_count():
        with fastconv.num_threads(1):
            fastconv.get_num_threads()

    return {
        "conv2d": lambda: fastconv.conv2d(x, w, padding=1),
        "conv2d im2col": lambda: fastconv.conv2d(x, w, padding=1, algorithm="im2col"),
        "conv2d_backward": lambda: fastconv.conv2d_backward(y, x, w, padding=1),
        "conv_transpose2d": lambda: fastconv.conv_transpose2d(y, w, padding=1),
        "conv_transpose2d_backward": lambda: fastconv.conv_transpose2d_backward(x, y, w,
                                                                                padding=1),
        "conv1d": lambda: fastconv.conv1d(x1, w1, padding=1),
        "conv1d_backward": lambda: fastconv.conv1d_backward(y1, x1, w1, padding=1),
        "conv_transpose1d": lambda: fastconv.conv_transpose1d(y1, w1, padding=1),
        "conv_transpose1d_backward": lambda: fastconv.conv_transpose1d_backward(x1, y1, w1,
                                                                                padding=1),
        "max_pool2d": lambda: fastconv.max_pool2d(x, 2, return_indices=True),
        "max_pool2d_backward": lambda: fastconv.max_pool2d_backward(pooled_grad, x, 2),
        "avg_pool2d": lambda: fastconv.avg_pool2d(x, 2),
        "avg_pool2d_backward": lambda: fastconv.avg_pool2d_backward(pooled_grad, x, 2),
        "relu": lambda: fastconv.relu(x),
        "relu_backward": lambda: fastconv.relu_backward(x, x),
        "conv_output_shape": lambda: fastconv.conv_output_shape((8, 8), 3, padding=1),
        "conv_transpose_output_shape": lambda: fastconv.conv_transpose_output_shape((8, 8), 3),
        "conv_matrix": lambda: fastconv.conv_matrix((8, 8, 4), w),
        "filter2d": lambda: filters.filter2d(image, filters.sobel("x")),
        "filter kernels": lambda: (filters.gaussian(1.0), filters.box(3), filters.laplace()),
        "softmax_cross_entropy": lambda: losses.softmax_cross_entropy(logits, labels),
        "num_threads": thread_count,
        "Conv2d forward + backward": layer_round_trip,
    }


LEAK_CALLABLES = _leak_calls()


@pytest.mark.parametrize("name", list(LEAK_CALLABLES))
def test_calls_keep_traced_memory_flat(name):
    call = LEAK_CALLABLES[name]
    for _ in range(20):  # warm up: caches, pools, lazily imported modules
        call()
    gc.collect()
    tracemalloc.start()
    try:
        call()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(TRACED_CALLS):
            call()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < TRACED_TOLERANCE, f"{name}: traced memory grew by {grown / 2**10:.0f} KiB " \
                                     f"over {TRACED_CALLS} calls"


@pytest.mark.heavy
@pytest.mark.skipif(_rss() is None, reason="cannot read the resident set size here")
@pytest.mark.parametrize("name", list(LEAK_CALLABLES))
def test_many_calls_keep_memory_flat(name):
    """The resident memory after each batch of calls: measured from the end of the first
    batch (which absorbs the allocator's and the caches' growth) to the end of the last."""
    call = LEAK_CALLABLES[name]
    sizes = []
    for _ in range(1 + LEAK_BATCHES):
        for _ in range(LEAK_BATCH_CALLS):
            call()
        gc.collect()
        sizes.append(_rss())
    grown = sizes[-1] - sizes[0]
    assert grown < LEAK_TOLERANCE, f"{name}: resident memory grew by {grown / 2**20:.1f} MiB " \
                                   f"over {LEAK_BATCHES * LEAK_BATCH_CALLS} calls ({sizes})"
