import ArgumentParser
import AuthorizerCore
import AuthorizerServer
import Foundation
import Ledger
import MetricsScrape
import NIOCore
import NIOPosix
import RedisWire

/// `authorizer top`: a live view of one server (its /metrics) and of Redis.
struct Top: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Live view: throughput by code, latency, contention, locks held, statements stream and replayer lag."
    )

    @OptionGroup var redisOptions: RedisOptions

    @Option(help: "The metrics endpoint of a server started with --metrics-port.")
    var metrics = "http://127.0.0.1:9464"

    @Option(help: "Seconds between refreshes.")
    var interval = 1.0

    @Flag(help: "Print one view (averages since the server started) and exit; non-zero when a source is unreachable.")
    var once = false

    func validate() throws {
        guard (0.1...60).contains(interval) else { throw ValidationError("--interval must be 0.1-60 seconds") }
        do {
            _ = try MetricsURL(metrics)
        } catch {
            throw ValidationError("--metrics: \(error)")
        }
    }

    func run() async throws {
        let url = try MetricsURL(metrics)
        let redis = try await RedisSession.open(redisOptions)
        defer { redis.close() }
        let source = TopSource(redis: redis, metrics: url, lag: LedgerLagReader(redis: redis.redis))
        if once {
            let snapshot = await source.sample()
            print(TopView(redisLabel: "\(redis.client.endpoint)", metricsLabel: url.description).render(snapshot, previous: nil), terminator: "")
            if snapshot.failed { throw ExitCode.failure }
            return
        }
        let view = TopView(redisLabel: "\(redis.client.endpoint)", metricsLabel: url.description)
        let onTerminal = isatty(STDOUT_FILENO) == 1
        var previous: TopSnapshot?
        while true {
            let started = Date()
            let snapshot = await source.sample()
            let frame = view.render(snapshot, previous: previous)
            // Home and clear, then the frame: one write per refresh.
            FileHandle.standardOutput.write(Data((onTerminal ? "\u{1B}[H\u{1B}[2J" + frame : frame + "\n").utf8))
            if snapshot.metrics != nil { previous = snapshot }
            let pause = interval - Date().timeIntervalSince(started)
            if pause > 0 { try await Task.sleep(for: .seconds(pause)) }
        }
    }
}

// MARK: - Sampling

/// One look at the server and at Redis.
struct TopSnapshot {
    var time: Date
    var metrics: PrometheusSample?
    var metricsError: String?
    var stream: ReplayerLag?
    var locks: LockScan?
    var redisError: String?

    var failed: Bool { metricsError != nil || redisError != nil }
}

/// Locks held now, from `SCAN 0 MATCH lock:*`, bounded per refresh.
struct LockScan {
    static let maxCalls = 100
    static let countPerCall = 1_000
    static let shown = 5

    var count = 0
    /// False when the scan stopped at `maxCalls` (the count is then a lower bound).
    var complete = true
    var sample: [(key: String, pttl: Int64)] = []
}

struct TopSource {
    let redis: RedisSession
    let metrics: MetricsURL
    /// The lag summed over every master's ledger streams.
    let lag: LedgerLagReader

    func sample() async -> TopSnapshot {
        var snapshot = TopSnapshot(time: Date())
        let scrape = MetricsScraper.get(metrics, on: redis.eventLoop)
        do {
            snapshot.stream = try await lag.read().get()
            snapshot.locks = try await scanLocks()
        } catch {
            snapshot.redisError = "\(error)"
        }
        do {
            snapshot.metrics = PrometheusSample(text: try await scrape.get())
        } catch {
            snapshot.metricsError = "\(error)"
        }
        snapshot.time = Date()
        return snapshot
    }

    /// Every Redis that holds keys: the one, or each master (SCAN is node-local).
    private func lockHolders() async throws -> [RedisClient] {
        try await redis.masters().map(\.client)
    }

    private func scanLocks() async throws -> LockScan {
        var scan = LockScan()
        var calls = 0
        var keys: [(key: String, holder: RedisClient)] = []
        for holder in try await lockHolders() {
            var cursor = "0"
            repeat {
                let reply = try await holder.send(RedisCommand("SCAN", cursor, "MATCH", "lock:*", "COUNT", String(LockScan.countPerCall))).get()
                guard let items = reply.array, items.count == 2, let next = items[0].string else {
                    throw RedisError.unexpectedReply("\(reply)")
                }
                let batch = items[1].array ?? []
                scan.count += batch.count
                for key in batch where keys.count < LockScan.shown {
                    if let key = key.string { keys.append((key, holder)) }
                }
                cursor = next
                calls += 1
            } while cursor != "0" && calls < LockScan.maxCalls
            // The bound is over every node together.
            if cursor != "0" { scan.complete = false }
        }
        let ttls = keys.map { $0.holder.send(RedisCommand("PTTL", $0.key)) }
        for ((key, _), ttl) in zip(keys, ttls) {
            let pttl = try await ttl.get().int ?? -2
            if pttl != -2 { scan.sample.append((key, pttl)) }
        }
        return scan
    }
}

// MARK: - Rendering

struct TopView {
    let redisLabel: String
    let metricsLabel: String

    typealias Name = ServerMetrics.Name

    func render(_ now: TopSnapshot, previous: TopSnapshot?) -> String {
        var out = "authorizer top   \(Self.clock(now.time))   redis \(redisLabel)   metrics \(metricsLabel)\n\n"
        if let current = now.metrics {
            out += renderServer(current, now: now.time, previous: previous?.metrics, previousTime: previous?.time)
        } else {
            out += "SERVER\n  metrics unreachable: \(now.metricsError ?? "unknown error")\n\n"
        }
        out += renderRedis(now)
        return out
    }

    private func renderServer(_ current: PrometheusSample, now: Date, previous: PrometheusSample?, previousTime: Date?) -> String {
        // The window: since the last refresh, or since the server started.
        let window: Double
        let base: PrometheusSample?
        let windowLabel: String
        if let previous, let previousTime {
            window = max(now.timeIntervalSince(previousTime), 0.001)
            base = previous
            windowLabel = String(format: "last %.1f s", window)
        } else {
            let started = current.sum(Name.startTime)
            window = started > 0 ? max(now.timeIntervalSince1970 - started, 0.001) : 1
            base = nil
            windowLabel = "since the server started " + Self.duration(window) + " ago"
        }
        func delta(_ name: String, _ labels: [String: String] = [:]) -> Double {
            current.sum(name, labels) - (base?.sum(name, labels) ?? 0)
        }

        var out = "REQUESTS (\(windowLabel))\n"
        out += Self.row("  code", "reason", "per second", "total") + "\n"
        var rows: [(code: String, reason: String)] = []
        for entry in current.values(Name.requests) {
            guard let code = entry.labels["code"], let reason = entry.labels["reason"] else { continue }
            if code != ResponseCode.rejected.rawValue || entry.value > 0 { rows.append((code, reason)) }
        }
        rows.sort { ($0.code, $0.reason) < ($1.code, $1.reason) }
        for row in rows {
            let labels = ["code": row.code, "reason": row.reason]
            out += Self.row("  " + row.code, row.reason, String(format: "%.1f", delta(Name.requests, labels) / window), Self.integer(current.sum(Name.requests, labels))) + "\n"
        }
        out += Self.row("  all", "", String(format: "%.1f", delta(Name.requests) / window), Self.integer(current.sum(Name.requests))) + "\n\n"

        let latency = Self.deltaBuckets(current.buckets(Name.requestDuration), base?.buckets(Name.requestDuration))
        out += "LATENCY (terminal line in -> answer out, \(windowLabel))\n"
        out += "  p50 \(Self.quantile(0.5, latency))   p99 \(Self.quantile(0.99, latency))   over 100 ms \(Self.share(over: 0.1, latency))\n"
        let redisTrip = Self.deltaBuckets(current.buckets(Name.redisRoundTrip, ["script": "authorize"]), base?.buckets(Name.redisRoundTrip, ["script": "authorize"]))
        out += "  redis round trip (authorize): p50 \(Self.quantile(0.5, redisTrip))   p99 \(Self.quantile(0.99, redisTrip))\n\n"

        out += "CONTENTION\n"
        out += "  contended accounts \(Self.integer(current.sum(Name.contendedAccounts)))   waiting requests \(Self.integer(current.sum(Name.lockWaiters)))"
        out += String(format: "   lock waits %.1f/s   timeouts %.1f/s", delta(Name.lockWaits) / window, delta(Name.lockWaitTimeouts) / window) + "\n"
        let waits = Self.deltaBuckets(current.buckets(Name.lockWaitDuration), base?.buckets(Name.lockWaitDuration))
        out += "  lock wait p50 \(Self.quantile(0.5, waits))   p99 \(Self.quantile(0.99, waits))   timeouts total \(Self.integer(current.sum(Name.lockWaitTimeouts)))\n\n"

        out += "CONNECTIONS\n"
        out += "  terminals open \(Self.integer(current.sum(Name.connections)))   refused total \(Self.integer(current.sum(Name.connectionsRefused)))"
        out += "   redis reconnects \(Self.integer(current.sum(Name.redisReconnects)))   NOSCRIPT reloads \(Self.integer(current.sum(Name.scriptReloads)))\n\n"
        out += Self.memory(used: current.sum(Name.redisUsedMemory), max: current.sum(Name.redisMaxMemory))
        return out
    }

    /// The fullest Redis node against its maxmemory, flagged from 80 %.
    static func memory(used: Double, max: Double) -> String {
        let mib = { (bytes: Double) in String(format: "%.1f MiB", bytes / 1_048_576) }
        guard max > 0 else { return "REDIS MEMORY\n  used \(mib(used)) (no maxmemory: Redis may grow until the kernel kills it)\n\n" }
        let ratio = used / max
        let flag = ratio >= ServerMetrics.memoryWarningRatio
            ? "   ALERT: past maxmemory every authorization is answered 07; let the replayer trim, or raise maxmemory" : ""
        return "REDIS MEMORY\n  used \(mib(used)) of \(mib(max)) (\(Int(ratio * 100)) %)\(flag)\n\n"
    }

    private func renderRedis(_ now: TopSnapshot) -> String {
        var out = "LOCKS HELD NOW\n"
        if let locks = now.locks {
            out += "  \(locks.complete ? "" : "at least ")\(locks.count) \(locks.count == 1 ? "lock" : "locks")"
            out += locks.complete ? "\n" : " (scan stopped after \(LockScan.maxCalls * LockScan.countPerCall) keys)\n"
            for (key, pttl) in locks.sample {
                out += "    \(key)  \(pttl >= 0 ? "expires in \(pttl) ms" : "no expiry")\n"
            }
        } else {
            out += "  redis unreachable: \(now.redisError ?? "unknown error")\n"
        }
        out += "\nSTATEMENTS\n"
        if let stream = now.stream {
            out += "  stream length \(stream.length)" + (stream.streams > 1 ? " (\(stream.streams) slot streams)\n" : "\n")
            let entries = stream.undelivered.map { "\(stream.undeliveredIsLowerBound ? "at least " : "")\($0)" } ?? "unknown"
            let age = stream.lagSeconds.map { String(format: "oldest %.1f s", $0) } ?? "age unknown"
            if stream.groupExists {
                out += "  replayer lag \(entries) entries (\(age))   pending \(stream.pending)   consumers \(stream.consumers)\n"
            } else {
                out += "  replayer lag \(entries) entries (\(age); no `\(Keys.replayGroup)` consumer group yet)\n"
            }
        } else {
            out += "  redis unreachable: \(now.redisError ?? "unknown error")\n"
        }
        return out
    }

    // MARK: Formatting

    static func row(_ a: String, _ b: String, _ c: String, _ d: String) -> String {
        a.padding(toLength: 8, withPad: " ", startingAt: 0) + b.padding(toLength: 22, withPad: " ", startingAt: 0)
            + String(repeating: " ", count: max(0, 12 - c.count)) + c + String(repeating: " ", count: max(0, 14 - d.count)) + d
    }

    static func integer(_ value: Double) -> String {
        value.isFinite ? String(Int64(value.rounded())) : "-"
    }

    static func clock(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return formatter.string(from: date)
    }

    static func duration(_ seconds: Double) -> String {
        if seconds < 0.001 { return String(format: "%.0f µs", seconds * 1_000_000) }
        if seconds < 1 { return String(format: "%.1f ms", seconds * 1_000) }
        if seconds < 120 { return String(format: "%.1f s", seconds) }
        return String(format: "%.0f min", seconds / 60)
    }

    /// Cumulative buckets minus an earlier reading of the same histogram.
    static func deltaBuckets(_ current: [(Double, Double)], _ earlier: [(Double, Double)]?) -> [(Double, Double)] {
        guard let earlier else { return current }
        let before = Dictionary(earlier, uniquingKeysWith: +)
        return current.map { ($0.0, $0.1 - (before[$0.0] ?? 0)) }
    }

    /// The q-quantile, interpolated inside its bucket as Prometheus' histogram_quantile does.
    static func quantile(_ q: Double, _ buckets: [(Double, Double)]) -> String {
        guard let total = buckets.last?.1, total > 0 else { return "-" }
        let rank = q * total
        var lower = 0.0
        var below = 0.0
        for (bound, count) in buckets {
            if count >= rank {
                if bound.isInfinite { return "> " + duration(lower) }
                let fraction = count > below ? (rank - below) / (count - below) : 1
                return duration(lower + (bound - lower) * fraction)
            }
            lower = bound
            below = count
        }
        return "-"
    }

    static func share(over limit: Double, _ buckets: [(Double, Double)]) -> String {
        guard let total = buckets.last?.1, total > 0, let within = buckets.first(where: { $0.0 >= limit })?.1 else { return "-" }
        return String(format: "%.2f%%", (total - within) / total * 100)
    }
}
