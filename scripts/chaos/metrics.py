"""Scraping `serve`'s Prometheus metrics across restarts.

Counters start from zero in every process life, so the sampler keeps, per
serve and per life, the greatest value seen of each series; a total is the
sum of those maxima over every life of every serve. Sample before a kill so
that a life's last counts are not lost.
"""
import threading

WATCHED = (
    "authorizer_timeouts_total",
    "authorizer_reversals_applied_total",
    "authorizer_pending_reversals",
    "authorizer_redis_cluster_redirects_total",
    "authorizer_unreplicated_decisions_total",
    "authorizer_requests_total",
    "authorizer_redis_reconnects_total",
    "authorizer_reversal_journal_bytes",
)


def parse_prometheus(text):
    """{'name{labels}': value} for the watched series."""
    series = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        name = key.split("{", 1)[0]
        if name in WATCHED:
            try:
                series[key] = float(value)
            except ValueError:
                continue
    return series


class MetricsBook:
    """Maxima per (serve, life, series); thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.maxima = {}  # (serve, life) -> {series: max}
        self.last = {}    # serve -> {series: last value}
        self.samples = 0

    def record(self, serve_index, life, text):
        series = parse_prometheus(text)
        with self.lock:
            book = self.maxima.setdefault((serve_index, life), {})
            for key, value in series.items():
                if value == value:  # not NaN
                    book[key] = max(book.get(key, value), value)
            self.last[serve_index] = series
            self.samples += 1

    def total(self, prefix):
        """Sum over lives of the maxima of every series starting with prefix."""
        with self.lock:
            return sum(v for book in self.maxima.values() for k, v in book.items() if k.startswith(prefix))

    def gauge_now(self, prefix):
        with self.lock:
            return sum(v for s in self.last.values() for k, v in s.items() if k.startswith(prefix))

    def summary(self):
        keys = {
            "timeouts": "authorizer_timeouts_total",
            "reversals_applied": "authorizer_reversals_applied_total",
            "redirects_moved": 'authorizer_redis_cluster_redirects_total{kind="moved"}',
            "redirects_ask": 'authorizer_redis_cluster_redirects_total{kind="ask"}',
            "redirects_tryagain": 'authorizer_redis_cluster_redirects_total{kind="tryagain"}',
            "unreplicated_decisions": "authorizer_unreplicated_decisions_total",
            "redis_reconnects": "authorizer_redis_reconnects_total",
        }
        result = {name: self.total(prefix) for name, prefix in keys.items()}
        result["samples"] = self.samples
        return result


def sample(book, serve):
    """One scrape of a serve into the book (nothing when it does not answer)."""
    if not serve.proc.alive():
        return False
    text = serve.metrics_text()
    if text is None:
        return False
    book.record(serve.index, serve.proc.starts, text)
    return True


class Sampler(threading.Thread):
    """Scrapes every serve every `period` seconds until stopped."""

    def __init__(self, book, serves, period=1.0):
        super().__init__(name="metrics-sampler", daemon=True)
        self.book, self.serves, self.period = book, serves, period
        self.halt = threading.Event()

    def run(self):
        while not self.halt.wait(self.period):
            for serve in self.serves:
                sample(self.book, serve)

    def stop(self):
        self.halt.set()
        if self.is_alive():
            self.join(5)
