"""Counters and histograms of the daemon, rendered as Prometheus text."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable

LATENCY_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sessions_active = 0
        self.sessions_total = 0
        self.audio_seconds = 0.0
        self.errors: dict[str, int] = {}
        self.final_latency = Histogram()
        self.gauges: dict[str, Callable[[], float]] = {}

    def error(self, code: str) -> None:
        with self.lock:
            self.errors[code] = self.errors.get(code, 0) + 1

    def render(self) -> str:
        with self.lock:
            lines = [
                "# TYPE streamer_sessions_active gauge",
                f"streamer_sessions_active {self.sessions_active}",
                "# TYPE streamer_sessions_total counter",
                f"streamer_sessions_total {self.sessions_total}",
                "# TYPE streamer_audio_seconds_total counter",
                f"streamer_audio_seconds_total {self.audio_seconds:.3f}",
                "# TYPE streamer_errors_total counter",
            ]
            lines += [f'streamer_errors_total{{code="{code}"}} {n}' for code, n in sorted(self.errors.items())]
            for name, gauge in self.gauges.items():
                lines += [f"# TYPE streamer_{name} gauge", f"streamer_{name} {gauge():.6g}"]
            h = self.final_latency
            lines.append("# TYPE streamer_final_latency_seconds histogram")
            cumulative = 0
            for bound, count in zip((*h.buckets, float("inf")), h.counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                lines.append(f'streamer_final_latency_seconds_bucket{{le="{le}"}} {cumulative}')
            lines.append(f"streamer_final_latency_seconds_sum {h.total:.3f}")
            lines.append(f"streamer_final_latency_seconds_count {h.n}")
        return "\n".join(lines) + "\n"
