"""What is served now, and the switch to a new version when its alias moves (the models themselves are
found, fetched and verified by serve/model.py)."""
import logging
import threading
import time

from serve.model import Champion, ModelError, Registry

log = logging.getLogger("serve.model")


class Serving:
    """The champion being served now, and the switch to a new version when the alias moves.

    A request reads `serving.champion` once and uses that object to the end, so a switch never drops or
    mixes a request: the old session lives until its last request lets go of it. A new version is loaded,
    verified and self-tested *before* the switch; if any check fails the old one keeps serving and the
    reason is kept in `last_error` (shown by /model and /ready)."""

    def __init__(self, champion: Champion | None, registry: Registry | None = None, threads=1, on_switch=None,
                 last_error=None):
        """champion None: nothing verified to serve yet (the number reader is optional); refresh loads it
        once the registry has one that passes."""
        self.champion, self.registry, self.threads = champion, registry, threads
        self.last_error, self.last_check = last_error, None
        self.on_switch = on_switch or (lambda outcome, old, new: None)
        self._lock = threading.Lock()  # one refresh at a time
        self._stop = threading.Event()

    def refresh(self) -> str:
        """Ask the registry where the alias points; switch if it moved. Returns what happened."""
        if self.registry is None:
            return "fixed"
        with self._lock:
            self.last_check = time.time()
            try:
                serving = self.champion and (self.champion.loaded_for or self.champion.version)
                if self.registry.version() == serving:
                    self.last_error = None
                    return "unchanged"
                new = self.registry.load(self.threads)
            except ModelError as e:
                if self.champion is None and str(e) == self.last_error:  # still none to serve: said already
                    return "refused"
                self.last_error = str(e)
                log.error("keeping %s: %s", self.champion.label if self.champion else "no model", e)
                self.on_switch("refused", self.champion, None)
                return "refused"
            if self.champion and (new.label, new.sha256) == (self.champion.label, self.champion.sha256):  # its INT8 copy was refused
                self.champion.loaded_for, self.champion.note = new.loaded_for, new.note
                self.last_error = new.note
                self.on_switch("refused", self.champion, None)
                return "refused"
            log.warning("switching from %s to %s", self.champion.label if self.champion else "no model", new.label)
            old, self.champion, self.last_error = self.champion, new, None
            self.on_switch("switched", old, new)
            return "switched"

    def watch(self, interval: float):
        """Poll the registry every `interval` seconds in a daemon thread (0 turns polling off)."""
        if interval <= 0 or self.registry is None:
            return

        def loop():
            while not self._stop.wait(interval):
                try:
                    self.refresh()
                except Exception:  # never let the watcher die: log and poll again
                    log.exception("model refresh failed")

        threading.Thread(target=loop, name="champion-watch", daemon=True).start()

    def stop(self):
        self._stop.set()
