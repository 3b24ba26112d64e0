"""A real local OpenAI-compatible server (llama.cpp through the PyPI package xllamacpp) serving a GGUF.

The server runs in a child process (`python -m yapo_bench.judge.server`): stopping it is a SIGTERM that cannot
leave llama.cpp threads behind in the caller, and its log goes to a file instead of the caller's terminal."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def default_gguf() -> Path:
    """The default model's packaged GGUF (SmolLM2-135M-Instruct), located as the model preset locates it."""
    from yapo_bench.models import DEFAULT_MODEL, get_preset

    return get_preset(DEFAULT_MODEL).gguf_path()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def local_server(gguf_path: str | Path | None = None, port: int | None = None, host: str = "127.0.0.1",
                 n_ctx: int = 4096, parallel: int = 2, threads: int | None = None, startup_timeout: float = 120.0,
                 log_path: str | Path | None = None) -> Iterator[str]:
    """Serve `gguf_path` (default: the packaged SmolLM2) and yield its base URL (`http://host:port/v1`).

    Waits until /v1/models answers; stops the server (SIGTERM, then SIGKILL) on exit, also on error.
    `parallel` request slots share `n_ctx`; the server log goes to `log_path` (default: a temporary file,
    quoted in the error if the server does not come up)."""
    import xllamacpp  # noqa: F401  (fail here, with its name, if the package is missing)

    gguf = Path(gguf_path) if gguf_path is not None else default_gguf()
    if not gguf.is_file():
        raise ValueError(f"gguf: {gguf} is not a file")
    port = port or free_port(host)
    # One core left for the client side: llama.cpp's worker threads spin at their barriers and slow down many
    # times over when another busy process takes one of their cores (measured: 5 s -> 60 s on 2 busy cores).
    threads = threads or max(1, min((os.cpu_count() or 2) - 1, 8))
    command = [sys.executable, "-m", "yapo_bench.judge.server", "--gguf", str(gguf), "--host", host,
               "--port", str(port), "--n-ctx", str(n_ctx), "--parallel", str(parallel), "--threads", str(threads)]
    log_file = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="yapo-judge-server-", suffix=".log")[1])
    base_url = f"http://{host}:{port}/v1"
    with open(log_file, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_ready(process, base_url, startup_timeout, log_file)
        yield base_url
    finally:
        _stop(process)
        if not log_path:
            with contextlib.suppress(OSError):
                log_file.unlink()


def _wait_ready(process: subprocess.Popen, base_url: str, timeout: float, log_file: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"judge server exited with code {process.returncode} before answering; "
                               f"log tail:\n{_tail(log_file)}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
                if response.status == 200:
                    json.load(response)
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"judge server did not answer {base_url}/models within {timeout:.0f} s; "
                       f"log tail:\n{_tail(log_file)}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _serve(argv: list[str] | None = None) -> None:
    """Child-process entry point: start xllamacpp's HTTP server and block until SIGTERM / SIGINT."""
    import xllamacpp as xlc

    parser = argparse.ArgumentParser(prog="python -m yapo_bench.judge.server")
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    params = xlc.CommonParams()
    params.model.path = args.gguf
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.n_ctx
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.warmup = False  # the warm-up decode took 6 s on a busy 2-core machine; the first request pays less
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    parent = os.getppid()
    server = xlc.Server(params)  # starts listening; lives as long as this object
    print(f"serving {args.gguf} at {server.listening_address}/v1", flush=True)
    # A parent killed without cleanup (SIGKILL, or SIGTERM with no handler) must not leave us serving: we are
    # re-parented, and getppid() changes.
    while not stop and os.getppid() == parent:
        time.sleep(0.2)
    del server


if __name__ == "__main__":
    _serve()
