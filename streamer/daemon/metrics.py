"""Counters and histograms of the daemon, rendered as Prometheus text."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.n = 0

        self.max = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1
        self.max = max(self.max, value)

    def render(self, name: str) -> list[str]:
        lines = [f"# TYPE {name} histogram"]
        cumulative = 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            cumulative += count
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            lines.append(f'{name}_bucket{{le="{le}"}} {cumulative}')
        lines.append(f"{name}_sum {self.total:.6g}")
        lines.append(f"{name}_count {self.n}")
        return lines


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sessions_total = 0
        self.audio_seconds = 0.0
        self.errors: dict[str, int] = {}
        self.final_latency = Histogram()  # a word's final sent minus its audio's arrival
        self.hypothesis_lag = Histogram()  # a decode's result minus the arrival of the last audio it heard
        self.loop_lag = Histogram(LAG_BUCKETS)  # how late the event loop runs a timer
        self.gauges: dict[str, Callable[[], float]] = {}

    def error(self, code: str) -> None:
        with self.lock:
            self.errors[code] = self.errors.get(code, 0) + 1

    def render(self) -> str:
        with self.lock:
            lines = [
                "# TYPE streamer_sessions_total counter",
                f"streamer_sessions_total {self.sessions_total}",
                "# TYPE streamer_audio_seconds_total counter",
                f"streamer_audio_seconds_total {self.audio_seconds:.3f}",
                "# TYPE streamer_errors_total counter",
            ]
            lines += [f'streamer_errors_total{{code="{code}"}} {n}' for code, n in sorted(self.errors.items())]
            for name, gauge in self.gauges.items():
                lines += [f"# TYPE streamer_{name} gauge", f"streamer_{name} {gauge():.6g}"]
            lines += self.final_latency.render("streamer_final_latency_seconds")
            lines += self.hypothesis_lag.render("streamer_hypothesis_lag_seconds")
            lines += self.loop_lag.render("streamer_loop_lag_seconds")
            lag_max = self.loop_lag.max
            lines += ["# TYPE streamer_loop_lag_max_seconds gauge", f"streamer_loop_lag_max_seconds {lag_max:.6g}"]
        return "\n".join(lines) + "\n"
