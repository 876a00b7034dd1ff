"""Servers started as processes on loopback: free ports, polling a condition with a
bound, and stopping what was started; work repeated in a thread while a test acts."""
import socket
import subprocess
import threading
import time

_HANDED_OUT = set()


def free_port(host="127.0.0.1"):
    """A port free now on `host` and never handed out before in this session: servers
    bind later, so two calls in a row must not return the same port."""
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_until(check, timeout=30.0, what="condition", interval=0.05):
    """Polls `check` every `interval` seconds until it returns truthy; fails after
    `timeout` seconds, naming the last error."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as e:  # noqa: BLE001 - remember why it is not ready yet
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}: {last}")


def stop(proc, timeout=10):
    """Stops one process started with Popen: stdin closed, terminated, killed when it
    does not exit within `timeout` seconds."""
    if proc.stdin:
        proc.stdin.close()
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


class Service:
    """A context manager for something started: `start()` on entry (its result is the
    `as` target), `stop()` on exit."""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Processes(Service):
    """Servers started as processes (`self.procs`, in start order), stopped all at
    once, newest first."""

    procs: list

    def stop(self):
        for p in reversed(self.procs):
            stop(p)
        self.procs = []


class Repeating:
    """Runs `once()` in a thread, again `interval` seconds after each run, from the start
    of a `with` block until its end; at the end the thread is asked to stop and joined for
    at most `join_timeout` seconds (a run in progress finishes first)."""

    def __init__(self, interval=0.05, join_timeout=10):
        self.interval, self.join_timeout = interval, join_timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def once(self):
        """One run of the repeated work (the subclass's)."""
        raise NotImplementedError

    def _run(self):
        while not self._stop.is_set():
            self.once()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=self.join_timeout)
