"""Test doubles for the sweep runner and the engines: tiny experiments importable by name (``sweep_doubles``) from
subprocess drivers and Ray workers (the tests put this directory on PYTHONPATH)."""
import time
from dataclasses import dataclass


@dataclass
class Fake:
    """A tiny experiment: metrics derived from the config; optionally raises at one config; ``delay_s`` per run."""

    name: str = "fake"
    description: str = "test double"
    crash_at: int | None = None
    calls: int = 0
    delay_s: float = 0.0
    runs: int = 8

    def configs(self, scale, seeds=None):
        return [{"i": i, "seed": i % 2} for i in range(self.runs)]

    def run(self, config, device, on_loss=None):
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if config["i"] == self.crash_at:
            raise RuntimeError(f"injected crash at i={config['i']}")
        if on_loss:
            on_loss(1.0 / (1 + config["i"]))
        return {"square": config["i"] ** 2, "device_type": device.type}

    def figures(self, records, out_dir):
        return []
