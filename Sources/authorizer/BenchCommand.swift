import AuthorizerCore
import ArgumentParser
import AuthorizerServer
import Foundation
import Histogram
import LoadGenerator
import NIOCore
import NIOPosix
import RedisWire

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load generator over the terminal protocol.",
        discussion: """
        Open loop (--rate N): requests leave on a fixed timetable whatever the \
        latency, and each latency is measured from the request's scheduled send \
        time, so a stall shows up in the numbers instead of slowing the load. \
        Closed loop (--rate 0): every connection keeps --pipeline requests in \
        flight, as fast as answers come. Accounts are bench-0 … bench-(N-1) and \
        hot-0 … hot-(H-1) (--contended is the share aimed at the hot ones); \
        --seed creates them through --redis first. --hgrm writes the latency \
        distribution for `authorizer bench plot`.
        """,
        subcommands: [BenchPlot.self, BenchReceiver.self]
    )

    @Option(help: "Terminal server, host:port; a comma-separated list spreads the connections over several.")
    var target = "127.0.0.1:7070"

    @Option(name: .customLong("protocol"), help: "line (line-JSON to the terminal port) or iso8583 (0200 purchases to the ISO 8583 port; accounts are PANs 8000000000+N, hot ones 9000000000+N).")
    var wire = "line"

    @OptionGroup var redisOptions: RedisOptions

    @Option(help: "Requests per second, open loop. 0: closed loop, as fast as possible.")
    var rate = 10_000

    @Option(help: "How long to send: 10s, 500ms, 2m.")
    var duration = TimeSpan(seconds: 10)

    @Option(help: "Terminal connections.")
    var connections = 64

    @Option(help: "Accounts bench-0 … bench-(N-1), chosen uniformly.")
    var accounts = 10_000

    @Option(help: "Share of requests (0-1) aimed at the hot accounts, so that they wait for each other.")
    var contended = 0.01

    @Option(help: "Number of the first account: bench-F … bench-(F+accounts-1), so a phase can load accounts no earlier one touched.")
    var firstAccount = 0

    @Option(help: "Hot accounts hot-0 … hot-(N-1).")
    var hotAccounts = 10

    @Option(help: "Most requests in flight per connection (the closed loop keeps this many).")
    var pipeline = 1

    @Option(help: "Event loop threads of the generator (it shares the machine with what it measures).")
    var threads = 1

    @Option(help: "After the last send, how long to wait for answers before counting them as errors.")
    var drainTimeout = TimeSpan(seconds: 10)

    @Flag(help: "First create the accounts with ample FOOD and CASH balances (through --redis).")
    var seed = false

    @Flag(help: "Print one JSON object (throughput, p50_ms … max_ms, codes, errors, …) instead of text.")
    var json = false

    @Option(help: "Also write the latency distribution to this file, in HdrHistogram's percentile text format (milliseconds; what HdrHistogram's plotter and `authorizer bench plot` read).")
    var hgrm: String?

    @Option(name: .customLong("cpu-of"), help: "NAME=PID[+PID…] (repeatable): report the CPU time (/proc/PID/stat utime + stime) these processes spend during the load, per answered request, as NAME; the generator itself is always measured.")
    var cpuOf: [String] = []

    @Flag(help: "Report the Redis memory (used_memory, over the masters of a cluster) the load leaves behind per answered request, split into the statement streams and the rest. Trims the statement streams to empty before and after the load: point --redis at a user allowed INFO, SCAN, XTRIM and DEL on them.")
    var memory = false

    @Option(help: "Instead of load: N times, hold an account's lock from outside (through --redis), send a request for that account, release the lock, and time the answer from the release.")
    var unlockProbes: Int?

    func validate() throws {
        guard !targets.isEmpty, targets.count == target.split(separator: ",").count else {
            throw ValidationError("--target must be host:port (or a comma-separated list of them)")
        }
        guard LoadProtocol(rawValue: wire) != nil else { throw ValidationError("--protocol must be line or iso8583") }
        if wire == "iso8583" && unlockProbes != nil { throw ValidationError("--unlock-probes speaks line-JSON only") }
        guard rate >= 0 else { throw ValidationError("--rate must be 0 (closed loop) or more") }
        guard duration.nanoseconds > 0 else { throw ValidationError("--duration must be positive") }
        guard (1...100_000).contains(connections) else { throw ValidationError("--connections must be 1-100000") }
        guard (1...1_024).contains(pipeline) else { throw ValidationError("--pipeline must be 1-1024 (the server reads no more than 1024 unanswered requests)") }
        guard accounts > 0, hotAccounts > 0 else { throw ValidationError("--accounts and --hot-accounts must be positive") }
        guard (0...1).contains(contended) else { throw ValidationError("--contended must be between 0 and 1") }
        guard (1...64).contains(threads) else { throw ValidationError("--threads must be 1-64") }
        if let unlockProbes, !(1...100_000).contains(unlockProbes) { throw ValidationError("--unlock-probes must be 1-100000") }
        guard firstAccount >= 0, firstAccount <= 1_000_000_000 else { throw ValidationError("--first-account must be 0-1000000000") }
        if unlockProbes != nil && (memory || !cpuOf.isEmpty) { throw ValidationError("--memory and --cpu-of measure a load, not --unlock-probes") }
        if (try? cpuGroups()) == nil { throw ValidationError("--cpu-of must be NAME=PID[+PID…], NAME not \(Self.generatorName)") }
    }

    private var targets: [HostPort] { target.split(separator: ",").compactMap { HostPort(String($0)) } }

    static let generatorName = "generator"
    /// Most processes measured: a cluster's masters and replicas, serve, the generator.
    static let maxCPUProcesses = 64

    /// The --cpu-of groups, then this process as `generator`.
    private func cpuGroups() throws -> [CPUMeter.Group] {
        var groups: [CPUMeter.Group] = []
        for spec in cpuOf {
            let parts = spec.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty, parts[0] != Self.generatorName, parts[0] != "total",
                  !groups.contains(where: { $0.name == parts[0] }) else { throw ValidationError(spec) }
            let pids = parts[1].split(separator: "+").compactMap { Int32($0) }
            guard !pids.isEmpty, pids.allSatisfy({ $0 > 0 }), pids.count == parts[1].split(separator: "+").count else { throw ValidationError(spec) }
            groups.append(CPUMeter.Group(name: parts[0], pids: pids))
        }
        groups.append(CPUMeter.Group(name: Self.generatorName, pids: [0]))
        guard groups.map(\.pids.count).reduce(0, +) <= Self.maxCPUProcesses else { throw ValidationError("too many pids") }
        return groups
    }

    func run() async throws {
        let runID = String(UInt64.random(in: .min ... .max), radix: 36)
        if seed {
            let started = Date()
            try await Self.seed(options: redisOptions, accounts: accounts, firstAccount: firstAccount, hotAccounts: hotAccounts, wire: LoadProtocol(rawValue: wire) ?? .line)
            log(String(format: "seeded %d accounts and %d hot accounts in %.2f s", accounts, hotAccounts, Date().timeIntervalSince(started)))
        }
        var report: LoadReport
        let description: String
        var cpu: [String: CPUCost]?
        var memoryReading: RedisMemoryProbe.Reading?
        if let unlockProbes {
            description = "unlock probes: \(unlockProbes) requests waiting on a lock held from outside, timed from the release"
            report = try await Self.probeUnlocks(unlockProbes, target: targets[0], endpoint: try redisOptions.endpoint(), runID: runID)
        } else {
            description = rate == 0
                ? "closed loop for \(duration), \(connections) connections x \(pipeline) in flight"
                : "open loop at \(rate)/s for \(duration), \(connections) connections, at most \(pipeline) in flight each"
            log("\(description); \(accounts) accounts, \(Int((contended * 100).rounded()))% to \(hotAccounts) hot accounts; run \(runID)")
            var options = LoadOptions(targets: targets, runID: runID)
            options.rate = rate
            options.duration = .nanoseconds(duration.nanoseconds)
            options.connections = connections
            options.pipeline = pipeline
            options.accounts = accounts
            options.firstAccount = firstAccount
            options.contended = contended
            options.hotAccounts = hotAccounts
            options.threads = threads
            options.wire = LoadProtocol(rawValue: wire) ?? .line
            options.drainTimeout = .nanoseconds(drainTimeout.nanoseconds)
            var memoryProbe: RedisMemoryProbe?
            var memoryRedis: RedisSession?
            defer { memoryRedis?.close() }
            if memory {
                let session = try await RedisSession.open(redisOptions)
                memoryRedis = session
                var probe = RedisMemoryProbe(redis: session)
                try await probe.begin()
                memoryProbe = probe
            }
            var meter = CPUMeter(groups: try cpuGroups())
            let progress = ProgressLine()
            report = try await LoadGenerator.run(
                options,
                onConnected: {
                    log("connected \($0) connections to \(target)")
                    meter.begin()  // the load starts now: connecting and seeding are not counted
                },
                onProgress: progress.show
            )
            cpu = meter.end()
            progress.end()
            if var probe = memoryProbe {
                try await probe.end()
                memoryReading = probe.reading
            }
        }
        if let hgrm {
            var text = ""
            report.latencies.outputPercentileDistribution(to: &text, outputValueUnitScalingRatio: 1_000_000)
            try text.write(toFile: hgrm, atomically: true, encoding: .utf8)
        }
        if json {
            print(try jsonReport(report, cpu: cpu, memory: memoryReading))
        } else {
            print(textReport(report, description: description, cpu: cpu, memory: memoryReading))
        }
    }

    // MARK: - Seeding

    static let ampleBalance = "1000000000000"  // 10^10.00 per category: a run is all 00

    /// One Redis or a cluster (each account's hash on the master of its slot).
    static func seed(options: RedisOptions, accounts: Int, firstAccount: Int = 0, hotAccounts: Int, wire: LoadProtocol = .line) async throws {
        let redis = try await RedisSession.open(options)
        defer { redis.close() }
        _ = try await redis.rulesStore.installDefaultsIfMissing().get()
        let ids = (firstAccount..<firstAccount + accounts).map { wire.account(UInt64($0), hot: false) } + (0..<hotAccounts).map { wire.account(UInt64($0), hot: true) }
        // Pipelined, a bounded batch at a time.
        for first in stride(from: 0, to: ids.count, by: 4_096) {
            let replies = ids[first..<min(first + 4_096, ids.count)].map { id in
                let command = RedisCommand("HSET", Keys.account(id), "FOOD", ampleBalance, "CASH", ampleBalance)
                return redis.future(command, key: Keys.account(id))
            }
            _ = try await EventLoopFuture.whenAllSucceed(replies, on: redis.eventLoop).get()
        }
    }

    // MARK: - Unlock probe

    /// A lock released from outside wakes the waiting request: each sample is
    /// the time from sending the DEL to the answer arriving, so it covers the
    /// keyevent notification, the retried authorize and the answer.
    static func probeUnlocks(_ count: Int, target: HostPort, endpoint: RedisEndpoint, runID: String) async throws -> LoadReport {
        let redis = RedisSession(endpoint: endpoint)
        defer { redis.close() }
        let client = try await LineClient.connect(to: target, on: MultiThreadedEventLoopGroup.singleton.next()).get()
        defer { client.close() }
        let account = "probe-0"
        let lock = Keys.lock(account)
        _ = try await redis.send(RedisCommand("HSET", Keys.account(account), "FOOD", ampleBalance, "CASH", ampleBalance))
        var report = LoadReport()
        let started = NIODeadline.now()
        for index in 0..<count {
            _ = try await redis.send(RedisCommand("SET", lock, "probe-\(runID)", "PX", "5000"))
            let answer = client.request(
                #"{"id":"\#(runID)-probe-\#(index)","account":"\#(account)","totalAmount":1.00,"mcc":"5411","merchant":"BENCH PROBE"}"#
            )
            report.sent += 1
            try await Task.sleep(for: .milliseconds(20))  // the request is now waiting for the lock
            let releasedAt = NIODeadline.now()
            let released = try await redis.send(RedisCommand("DEL", lock)).int == 1
            let (line, at) = try await answer.get()
            let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            guard let code = object?["code"] as? String else {
                report.errors["unreadable answer", default: 0] += 1
                continue
            }
            guard released, at >= releasedAt else {
                report.errors["answered before the release", default: 0] += 1
                continue
            }
            report.answered += 1
            report.codes[code, default: 0] += 1
            if let reason = object?["reason"] as? String { report.reasons[reason, default: 0] += 1 }
            report.latencies.record(UInt64((at - releasedAt).nanoseconds))
        }
        report.elapsed = NIODeadline.now() - started
        return report
    }

    // MARK: - Output

    private func milliseconds(_ histogram: LatencyHistogram, _ percentile: Double) -> Double {
        let nanos = percentile >= 100 ? histogram.max : histogram.valueAtPercentile(percentile)
        return (Double(nanos) / 1_000).rounded() / 1_000
    }

    private func textReport(_ report: LoadReport, description: String, cpu: [String: CPUCost]?, memory: RedisMemoryProbe.Reading?) -> String {
        let latencies = report.latencies
        func ms(_ percentile: Double) -> String { String(format: "%.3f", milliseconds(latencies, percentile)) }
        let codes = report.codes.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "  ")
        var lines = [
            description,
            "requests    \(report.sent) sent, \(report.answered) answered in \(String(format: "%.2f", Double(report.elapsed.nanoseconds) / 1e9)) s",
            "throughput  \(String(format: "%.1f", report.throughput))/s",
            "latency ms  p50 \(ms(50))  p90 \(ms(90))  p99 \(ms(99))  p99.9 \(ms(99.9))  max \(ms(100))",
            "codes       \(codes.isEmpty ? "none" : codes)",
        ]
        for (reason, count) in report.reasons.sorted(by: { $0.value > $1.value }) {
            lines.append("            07 \(reason): \(count)")
        }
        lines += BenchCost(answered: report.answered, cpu: cpu, memory: memory).lines
        lines.append("errors      \(report.errorCount)")
        for (problem, count) in report.errors.sorted(by: { $0.value > $1.value }) {
            lines.append("            \(problem): \(count)")
        }
        return lines.joined(separator: "\n")
    }

    /// The contract scripts parse: throughput, p50_ms, p90_ms, p99_ms,
    /// p999_ms, max_ms, codes, errors (plus context fields).
    private struct JSONReport: Encodable {
        var mode: String
        var rate: Int
        var elapsedSeconds: Double
        var connections: Int
        var pipeline: Int
        var requests: Int
        var answered: Int
        var throughput: Double
        var p50: Double, p90: Double, p99: Double, p999: Double, max: Double, mean: Double
        var codes: [String: Int]
        var reasons: [String: Int]
        var errors: Int
        var errorKinds: [String: Int]
        var cost: BenchCost

        func encode(to encoder: Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(mode, forKey: .mode)
            try container.encode(rate, forKey: .rate)
            try container.encode(elapsedSeconds, forKey: .elapsedSeconds)
            try container.encode(connections, forKey: .connections)
            try container.encode(pipeline, forKey: .pipeline)
            try container.encode(requests, forKey: .requests)
            try container.encode(answered, forKey: .answered)
            try container.encode(throughput, forKey: .throughput)
            try container.encode(p50, forKey: .p50)
            try container.encode(p90, forKey: .p90)
            try container.encode(p99, forKey: .p99)
            try container.encode(p999, forKey: .p999)
            try container.encode(max, forKey: .max)
            try container.encode(mean, forKey: .mean)
            try container.encode(codes, forKey: .codes)
            try container.encode(reasons, forKey: .reasons)
            try container.encode(errors, forKey: .errors)
            try container.encode(errorKinds, forKey: .errorKinds)
            try cost.encode(to: encoder)  // its fields at the top level, only those measured
        }

        enum CodingKeys: String, CodingKey {
            case mode, rate, connections, pipeline, requests, answered, throughput, codes, reasons, errors
            case elapsedSeconds = "elapsed_s"
            case p50 = "p50_ms", p90 = "p90_ms", p99 = "p99_ms", p999 = "p999_ms", max = "max_ms", mean = "mean_ms"
            case errorKinds = "error_kinds"
        }
    }

    private func jsonReport(_ report: LoadReport, cpu: [String: CPUCost]?, memory: RedisMemoryProbe.Reading?) throws -> String {
        let latencies = report.latencies
        let value = JSONReport(
            mode: unlockProbes != nil ? "unlock-probe" : rate == 0 ? "closed" : "open",
            rate: rate,
            elapsedSeconds: Double(report.elapsed.nanoseconds / 1_000_000) / 1_000,
            connections: unlockProbes != nil ? 1 : connections,
            pipeline: unlockProbes != nil ? 1 : pipeline,
            requests: report.sent,
            answered: report.answered,
            throughput: (report.throughput * 10).rounded() / 10,
            p50: milliseconds(latencies, 50), p90: milliseconds(latencies, 90), p99: milliseconds(latencies, 99),
            p999: milliseconds(latencies, 99.9), max: milliseconds(latencies, 100),
            mean: (latencies.mean / 1_000).rounded() / 1_000,
            codes: report.codes,
            reasons: report.reasons,
            errors: report.errorCount,
            errorKinds: report.errors,
            cost: BenchCost(answered: report.answered, cpu: cpu, memory: memory)
        )
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }
}

/// `authorizer bench plot`: latency by percentile from .hgrm files, as SVG.
struct BenchPlot: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plot",
        abstract: "Draw latency by percentile (50 % to 99.99 %) from .hgrm files as an SVG chart, one curve each.",
        discussion: "FILE or LABEL=FILE; without a label the curve is named after the file."
    )

    @Argument(help: "Percentile distributions written by `authorizer bench --hgrm` (LABEL=FILE to name the curve).")
    var files: [String]

    @Option(help: "Where to write the SVG.")
    var out = "latency.svg"

    @Option(help: "Draw the SLA as a line at this many milliseconds (0: none).")
    var slaMs = 100.0

    @Option(help: "Chart title.")
    var title = "Latency by percentile"

    func validate() throws {
        guard !files.isEmpty else { throw ValidationError("give at least one .hgrm file") }
        guard slaMs >= 0, slaMs.isFinite else { throw ValidationError("--sla-ms must be 0 or more") }
    }

    func run() async throws {
        let curves = try files.map { argument -> LatencyPlot.Curve in
            var label = ((argument as NSString).lastPathComponent as NSString).deletingPathExtension
            var path = argument
            if let equals = argument.firstIndex(of: "="), !FileManager.default.fileExists(atPath: argument) {
                label = String(argument[..<equals])
                path = String(argument[argument.index(after: equals)...])
            }
            do {
                return try LatencyPlot.parseHgrm(String(contentsOfFile: path, encoding: .utf8), label: label)
            } catch let error as LatencyPlot.ParseError {
                throw ValidationError(error.description)
            }
        }
        let svg = LatencyPlot.svg(curves: curves, slaMilliseconds: slaMs > 0 ? slaMs : nil, title: title)
        try svg.write(toFile: out, atomically: true, encoding: .utf8)
        log("wrote \(out): \(curves.count) curve\(curves.count == 1 ? "" : "s")")
    }
}

/// "1.5s", "500ms", "2m", or plain seconds.
struct TimeSpan: ExpressibleByArgument, CustomStringConvertible {
    let nanoseconds: Int64

    init(seconds: Int64) {
        nanoseconds = seconds * 1_000_000_000
    }

    init?(argument: String) {
        let units: [(suffix: String, nanos: Double)] = [("ms", 1e6), ("s", 1e9), ("m", 60e9), ("", 1e9)]
        for unit in units where argument.hasSuffix(unit.suffix) {
            guard let number = Double(argument.dropLast(unit.suffix.count)), number.isFinite, number >= 0, number * unit.nanos < 1e18 else { return nil }
            nanoseconds = Int64(number * unit.nanos)
            return
        }
        return nil
    }

    var description: String {
        if nanoseconds % 1_000_000_000 == 0 { return "\(nanoseconds / 1_000_000_000)s" }
        return "\(nanoseconds / 1_000_000)ms"
    }

    static var allValueStrings: [String] { [] }
    var defaultValueDescription: String { description }
}

/// Progress once a second on stderr: rewritten in place on a terminal, one line each otherwise.
final class ProgressLine {
    private let inPlace = isatty(STDERR_FILENO) == 1
    private var previous: (elapsed: TimeAmount, answered: Int) = (.zero, 0)

    func show(_ progress: LoadProgress) {
        let seconds = Double(progress.elapsed.nanoseconds) / 1e9
        let interval = Double((progress.elapsed - previous.elapsed).nanoseconds) / 1e9
        let rate = interval > 0 ? Double(progress.answered - previous.answered) / interval : 0
        previous = (progress.elapsed, progress.answered)
        let p99 = Double(progress.recent.valueAtPercentile(99)) / 1e6
        let text = String(
            format: "%5.1fs  sent %d  answered %d  %.0f/s  p99 %.3f ms  errors %d",
            seconds, progress.sent, progress.answered, rate, p99, progress.errors
        )
        FileHandle.standardError.write(Data((inPlace ? "\r\u{1B}[K" + text : text + "\n").utf8))
    }

    func end() {
        if inPlace { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}

private func log(_ message: String) {
    FileHandle.standardError.write(Data("\(message)\n".utf8))
}
