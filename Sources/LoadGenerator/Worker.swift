import Histogram
import NIOCore

/// The connections of one event loop and what they measured. Loop-confined.
final class Worker {
    let loop: EventLoop
    let options: LoadOptions
    private(set) var connections: [LoadConnection] = []
    private var random = SplitMix64(seed: UInt64.random(in: .min ... .max))
    private var report: LoadReport
    private var recent = makeLatencyHistogram()
    private var promise: EventLoopPromise<LoadReport>?
    private var remaining = 0
    private var drainTask: Scheduled<Void>?
    private(set) var startNanos: UInt64 = 0
    private(set) var stopNanos: UInt64 = 0
    private var lastAnswerNanos: UInt64 = 0
    private let merchant = "BENCH MARKET             SAO PAULO    BR"

    init(loop: EventLoop, options: LoadOptions) {
        self.loop = loop
        self.options = options
        self.report = LoadReport()
    }

    func add(_ connection: LoadConnection) {
        connections.append(connection)
    }

    func start(at start: NIODeadline) -> EventLoopFuture<LoadReport> {
        let promise = loop.makePromise(of: LoadReport.self)
        self.promise = promise
        startNanos = start.uptimeNanoseconds
        stopNanos = startNanos + UInt64(options.duration.nanoseconds)
        remaining = connections.count
        drainTask = loop.assumeIsolated().scheduleTask(deadline: .uptimeNanoseconds(stopNanos) + options.drainTimeout) {
            self.drainTimedOut()
        }
        loop.assumeIsolated().scheduleTask(deadline: start) {
            for connection in self.connections { connection.start() }
        }
        if connections.isEmpty { finish() }
        return promise.futureResult
    }

    /// Open loop: this connection's share of the timetable. Connection `n`
    /// sends at `start + n/rate + k*connections/rate`, so the sends of all
    /// connections are evenly spaced at 1/rate.
    func timetable(for number: Int) -> (first: Double, interval: Double, count: UInt64) {
        let rate = Double(options.rate)
        let first = Double(number) * 1e9 / rate
        let interval = Double(options.connections) * 1e9 / rate
        let duration = Double(options.duration.nanoseconds)
        let count = first < duration ? UInt64(((duration - first) / interval).rounded(.up)) : 0
        return (first, interval, count)
    }

    func writeRequest(connection: Int, sequence: UInt64, into buffer: inout ByteBuffer) {
        let account: String
        if options.contended > 0 && Double(random.next() >> 11) / Double(1 << 53) < options.contended {
            account = options.wire.account(random.next() % UInt64(max(1, options.hotAccounts)), hot: true)
        } else {
            account = options.wire.account(UInt64(options.firstAccount) + random.next() % UInt64(max(1, options.accounts)), hot: false)
        }
        let cents = 1 + random.next() % 9_999
        if options.wire == .iso8583 {
            writeISORequest(connection: connection, sequence: sequence, account: account, cents: cents, into: &buffer)
            return
        }
        buffer.writeStaticString("{\"id\":\"")
        writeID(connection: connection, sequence: sequence, into: &buffer)
        buffer.writeStaticString("\",\"account\":\"")
        buffer.writeString(account)
        buffer.writeStaticString("\",\"totalAmount\":")
        buffer.writeString(String(cents / 100))
        buffer.writeString(cents % 100 < 10 ? ".0\(cents % 100)" : ".\(cents % 100)")
        buffer.writeStaticString(",\"mcc\":\"5411\",\"merchant\":\"")
        buffer.writeString(merchant)
        buffer.writeStaticString("\"}\n")
        report.sent += 1
    }

    /// An 0200 purchase: DE2, 3, 4, 11, 18, 37, 41, 42, 43, 49 (bitmap
    /// 7020400008E08000), with its 2-byte length prefix. STAN: the sequence
    /// modulo 10^6 (at most 1024 in flight per connection); RRN: 12 characters
    /// from the run id, the connection and the sequence.
    func writeISORequest(connection: Int, sequence: UInt64, account: String, cents: UInt64, into buffer: inout ByteBuffer) {
        let lengthAt = buffer.writerIndex
        buffer.writeInteger(UInt16(0), endianness: .big)
        let start = buffer.writerIndex
        buffer.writeStaticString("02007020400008E08000")
        buffer.writeString(account.utf8.count < 10 ? "0\(account.utf8.count)" : "\(account.utf8.count)")
        buffer.writeString(account)
        buffer.writeStaticString("000000")
        buffer.writeString(Self.zeroPadded(cents, 12))
        buffer.writeString(Self.zeroPadded(sequence % 1_000_000, 6))
        buffer.writeStaticString("5411")
        buffer.writeString(isoRRN(connection: connection, sequence: sequence))
        buffer.writeStaticString("BENCH001BENCHMERCHANT01")
        buffer.writeString(merchant)
        buffer.writeStaticString("986")
        buffer.setInteger(UInt16(buffer.writerIndex - start), at: lengthAt, endianness: .big)
        report.sent += 1
    }

    static func zeroPadded(_ value: UInt64, _ width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }

    func isoRRN(connection: Int, sequence: UInt64) -> String {
        func base36(_ value: UInt64, _ width: Int) -> String {
            let text = String(value, radix: 36, uppercase: true)
            return text.count >= width ? String(text.suffix(width)) : String(repeating: "0", count: width - text.count) + text
        }
        var run = String(options.runID.uppercased().prefix(4))
        while run.count < 4 { run += "0" }
        return run + base36(UInt64(connection), 3) + base36(sequence, 5)
    }

    func writeID(connection: Int, sequence: UInt64, into buffer: inout ByteBuffer) {
        buffer.writeString(options.runID)
        buffer.writeString("-\(connection)-\(sequence)")
    }

    func answered(code: String, reason: String?, latency: UInt64, at now: UInt64) {
        report.answered += 1
        report.codes[code, default: 0] += 1
        if let reason { report.reasons[reason, default: 0] += 1 }
        let value = min(latency, maxLatency)
        report.latencies.record(value)
        recent.record(value)
        lastAnswerNanos = max(lastAnswerNanos, now)
    }

    func error(_ problem: String, count: Int = 1) {
        guard count > 0 else { return }
        report.errors[problem, default: 0] += count
    }

    func connectionFinished() {
        remaining -= 1
        if remaining == 0 { finish() }
    }

    private func drainTimedOut() {
        drainTask = nil
        for connection in connections { connection.abandon("no answer within the drain timeout") }
    }

    private func finish() {
        guard let promise else { return }
        self.promise = nil
        drainTask?.cancel()
        report.elapsed = .nanoseconds(Int64(max(lastAnswerNanos, startNanos) - startNanos))
        for connection in connections { connection.close() }
        promise.succeed(report)
    }

    func snapshot() -> (sent: Int, answered: Int, errors: Int, recent: LatencyHistogram) {
        defer { recent.reset() }
        return (report.sent, report.answered, report.errorCount, recent)
    }
}

/// A small fast generator for the choice of accounts and amounts.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
