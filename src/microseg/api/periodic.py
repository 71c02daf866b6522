"""A daemon thread that runs one job every N seconds until stopped (the server's hygiene)."""

from __future__ import annotations

import threading


class PeriodicThread(threading.Thread):
    """Daemon thread calling :meth:`tick` every ``interval`` seconds until :meth:`stop`.

    A tick that finds the job cannot go on calls :meth:`halt`; the thread then ends."""

    def __init__(self, name: str, interval: float) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        super().__init__(name=name, daemon=True)
        self.interval = interval
        self._stopped = threading.Event()

    def tick(self) -> object:
        """One run of the job (also callable directly)."""
        raise NotImplementedError

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.tick()

    @property
    def stopping(self) -> bool:
        return self._stopped.is_set()

    def halt(self) -> None:
        """Stop ticking, without waiting (callable from the thread itself)."""
        self._stopped.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop ticking and wait up to ``timeout`` seconds for a running tick to end."""
        self._stopped.set()
        if self.is_alive():
            self.join(timeout)
