import Dispatch
import Histogram
import AuthorizerCore
import NIOCore
import NIOPosix

/// A terminal server to load, `host:port`.
public struct Target: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (1...65_535).contains(port), colon > text.startIndex else { return nil }
        self.host = String(text[..<colon])
        self.port = port
    }

    public var description: String { "\(host):\(port)" }
}

/// What the generator speaks: line-JSON to the terminal port, or ISO 8583
/// (0200 purchases, 2-byte length prefix) to the ISO 8583 port.
public enum LoadProtocol: String, Sendable, CaseIterable {
    case line
    case iso8583

    /// The account of bench account number `n` (hot or not). ISO 8583 needs
    /// a PAN (digits): 8000000000 + n, hot ones 9000000000 + n.
    public func account(_ n: UInt64, hot: Bool) -> String {
        switch self {
        case .line: return hot ? "hot-\(n)" : "bench-\(n)"
        case .iso8583: return String((hot ? 9_000_000_000 : 8_000_000_000) + n)
        }
    }
}

public struct LoadOptions: Sendable {
    /// Connections are spread over the targets round-robin.
    public var targets: [Target]
    /// Requests per second over all connections, on a fixed timetable; 0 = closed loop.
    public var rate = 10_000
    public var duration: TimeAmount = .seconds(10)
    public var connections = 64
    /// Most requests in flight per connection; the closed loop keeps this many.
    public var pipeline = 1
    /// Accounts `bench-0` … `bench-(accounts-1)`, chosen uniformly.
    public var accounts = 10_000
    /// Share of requests aimed at `hot-0` … `hot-(hotAccounts-1)`.
    public var contended = 0.01
    public var hotAccounts = 10
    public var threads = 1
    /// After the last send, how long to wait for the remaining answers.
    public var drainTimeout: TimeAmount = .seconds(10)
    /// Prefix of every request id, unique per run (ids are remembered 24 h).
    public var runID: String
    public var wire: LoadProtocol = .line

    public init(targets: [Target], runID: String) {
        self.targets = targets
        self.runID = runID
    }

    public var closedLoop: Bool { rate == 0 }
}

/// Latencies in nanoseconds, 3 significant digits, up to one hour.
public typealias LatencyHistogram = Histogram<UInt64>

public func makeLatencyHistogram() -> LatencyHistogram {
    LatencyHistogram(lowestDiscernibleValue: 1_000, highestTrackableValue: maxLatency, numberOfSignificantValueDigits: .three)
}

let maxLatency: UInt64 = 3_600_000_000_000

public struct LoadReport: Sendable {
    /// Requests written to a connection.
    public var sent = 0
    /// Answers received (each matched to its request by id, in order).
    public var answered = 0
    /// From the first scheduled send to the last answer.
    public var elapsed: TimeAmount = .zero
    public var latencies = makeLatencyHistogram()
    /// Answer code -> count.
    public var codes: [String: Int] = [:]
    /// 07 reason -> count.
    public var reasons: [String: Int] = [:]
    /// Problem -> number of requests it affected.
    public var errors: [String: Int] = [:]

    public init() {}

    public var errorCount: Int { errors.values.reduce(0, +) }
    public var throughput: Double {
        elapsed.nanoseconds > 0 ? Double(answered) * 1e9 / Double(elapsed.nanoseconds) : 0
    }

    mutating func merge(_ other: LoadReport) {
        sent += other.sent
        answered += other.answered
        elapsed = max(elapsed, other.elapsed)
        latencies.add(other.latencies)
        codes.merge(other.codes, uniquingKeysWith: +)
        reasons.merge(other.reasons, uniquingKeysWith: +)
        errors.merge(other.errors, uniquingKeysWith: +)
    }
}

public struct LoadProgress: Sendable {
    public var elapsed: TimeAmount
    public var sent: Int
    public var answered: Int
    public var errors: Int
    /// Latencies of the answers since the previous progress report.
    public var recent: LatencyHistogram
}

public enum LoadGeneratorError: Error, CustomStringConvertible {
    case cannotConnect(Target, Error)

    public var description: String {
        switch self {
        case .cannotConnect(let target, let error): return "cannot connect to \(target): \(error)"
        }
    }
}

public enum LoadGenerator {
    /// Connects, runs the load, and returns when every answer is in (or the
    /// drain timeout passed). Blocks the calling thread, which must not be an
    /// event loop; `onProgress` is called on it about once a second.
    public static func run(
        _ options: LoadOptions,
        onConnected: (Int) -> Void = { _ in },
        onProgress: (LoadProgress) -> Void = { _ in }
    ) throws -> LoadReport {
        precondition(!options.targets.isEmpty && options.connections > 0 && options.pipeline > 0 && options.rate >= 0)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, options.threads))
        defer { try? group.syncShutdownGracefully() }
        let loops = Array(group.makeIterator())
        let workers = try loops.map { loop in
            try loop.submit { NIOLoopBound(Worker(loop: loop, options: options), eventLoop: loop) }.wait()
        }

        // Connect in bounded batches so a large --connections does not
        // overflow the server's accept backlog.
        let batch = 256
        for first in stride(from: 0, to: options.connections, by: batch) {
            let futures = (first..<min(first + batch, options.connections)).map { number -> EventLoopFuture<Channel> in
                let worker = workers[number % workers.count]
                let target = options.targets[number % options.targets.count]
                return ClientBootstrap(group: loops[number % loops.count])
                    .connectTimeout(.seconds(5))
                    .channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(LoadConnection(worker: worker.value, number: number))
                        }
                    }
                    .connect(host: target.host, port: target.port)
                    .flatMapErrorThrowing { throw LoadGeneratorError.cannotConnect(target, $0) }
            }
            _ = try EventLoopFuture.whenAllSucceed(futures, on: loops[0]).wait()
        }
        onConnected(options.connections)

        let start = NIODeadline.now() + .milliseconds(20)
        let results = workers.map { worker in
            worker.eventLoop.flatSubmit { worker.value.start(at: start) }
        }
        let all = EventLoopFuture.whenAllSucceed(results, on: loops[0])
        let finished = DispatchSemaphore(value: 0)
        all.whenComplete { _ in finished.signal() }
        while finished.wait(timeout: .now() + .seconds(1)) == .timedOut {
            let snapshots = try EventLoopFuture.whenAllSucceed(
                workers.map { worker in worker.eventLoop.submit { worker.value.snapshot() } }, on: loops[0]
            ).wait()
            var progress = LoadProgress(elapsed: NIODeadline.now() - start, sent: 0, answered: 0, errors: 0, recent: makeLatencyHistogram())
            for snapshot in snapshots {
                progress.sent += snapshot.sent
                progress.answered += snapshot.answered
                progress.errors += snapshot.errors
                progress.recent.add(snapshot.recent)
            }
            onProgress(progress)
        }
        var report = LoadReport()
        for part in try all.wait() { report.merge(part) }
        return report
    }
}

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
            account = options.wire.account(random.next() % UInt64(max(1, options.accounts)), hot: false)
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

/// One terminal connection under load: sends on its timetable (open loop) or
/// as answers come back (closed loop), at most `pipeline` in flight, and
/// matches each answer line to the oldest request in flight.
final class LoadConnection: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private struct InFlight {
        /// Open loop: the intended send time, so queueing anywhere counts.
        let sentAt: UInt64
        let sequence: UInt64
    }

    private let worker: Worker
    let number: Int
    private var context: ChannelHandlerContext?
    private var inFlight: CircularBuffer<InFlight>
    /// ISO 8583: answers come in any order, matched by STAN.
    private var isoInFlight: [UInt64: InFlight] = [:]
    private var inFlightCount: Int { worker.options.wire == .iso8583 ? isoInFlight.count : inFlight.count }
    private var received: ByteBuffer?
    private var next: UInt64 = 0
    private var timetable: (first: Double, interval: Double, count: UInt64) = (0, 0, 0)
    private var timer: Scheduled<Void>?
    private var started = false
    private var finished = false

    private static let maxLineLength = 64 * 1024

    init(worker: Worker, number: Int) {
        self.worker = worker
        self.number = number
        self.inFlight = CircularBuffer(initialCapacity: worker.options.pipeline)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        worker.add(self)
    }

    func start() {
        started = true
        if !worker.options.closedLoop { timetable = worker.timetable(for: number) }
        if finished {
            settle()  // lost before the start
            return
        }
        pump(now: NIODeadline.now().uptimeNanoseconds)
    }

    private func intended(_ sequence: UInt64) -> UInt64 {
        worker.startNanos + UInt64(timetable.first + Double(sequence) * timetable.interval)
    }

    /// Sends whatever is due, within the in-flight bound, in one write.
    private func pump(now: UInt64) {
        guard let context, started, !finished else { return }
        let pipeline = worker.options.pipeline
        let closedLoop = worker.options.closedLoop
        var out: ByteBuffer?
        while inFlightCount < pipeline {
            let sentAt: UInt64
            if closedLoop {
                guard now < worker.stopNanos else { break }
                sentAt = now
            } else {
                guard next < timetable.count else { break }
                sentAt = intended(next)
                guard sentAt <= now else { break }
            }
            if out == nil { out = context.channel.allocator.buffer(capacity: 160 * (pipeline - inFlightCount)) }
            worker.writeRequest(connection: number, sequence: next, into: &out!)
            if worker.options.wire == .iso8583 {
                isoInFlight[next % 1_000_000] = InFlight(sentAt: sentAt, sequence: next)
            } else {
                inFlight.append(InFlight(sentAt: sentAt, sequence: next))
            }
            next += 1
        }
        if let out { context.writeAndFlush(wrapOutboundOut(out), promise: nil) }
        if !closedLoop && timer == nil && next < timetable.count && inFlightCount < pipeline {
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            timer = context.eventLoop.scheduleTask(deadline: .uptimeNanoseconds(intended(next))) {
                bound.value.timer = nil
                bound.value.pump(now: NIODeadline.now().uptimeNanoseconds)
            }
        }
        let nothingLeft = closedLoop ? now >= worker.stopNanos : next >= timetable.count
        if nothingLeft && inFlightCount == 0 { finish() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let now = NIODeadline.now().uptimeNanoseconds
        var chunk = unwrapInboundIn(data)
        if received == nil {
            received = chunk
        } else {
            received!.writeBuffer(&chunk)
        }
        if worker.options.wire == .iso8583 {
            while let length = received!.getInteger(at: received!.readerIndex, endianness: .big, as: UInt16.self),
                  received!.readableBytes >= 2 + Int(length) {
                received!.moveReaderIndex(forwardBy: 2)
                let body = received!.readSlice(length: Int(length))!
                isoAnswer(body, at: now)
            }
        }
        while worker.options.wire == .line, let newline = received!.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
            let line = received!.readSlice(length: newline - received!.readerIndex)!
            received!.moveReaderIndex(forwardBy: 1)
            answer(line.readableBytesView, at: now)
        }
        if received!.readableBytes == 0 {
            received = nil
        } else if received!.readableBytes > Self.maxLineLength {
            abandon("answer line too long")
            return
        }
        pump(now: now)
    }

    private func answer(_ line: ByteBufferView, at now: UInt64) {
        guard let head = inFlight.popFirst() else {
            worker.error("answer with no request in flight")
            return
        }
        guard let code = Self.stringField("code", in: line), code.count == 2 else {
            worker.error("unreadable answer")
            return
        }
        var expected = ByteBuffer()
        worker.writeID(connection: number, sequence: head.sequence, into: &expected)
        guard let id = Self.stringField("id", in: line), id.elementsEqual(expected.readableBytesView) else {
            worker.error("answer id does not match the request in order")
            return
        }
        let reason = code.elementsEqual("07".utf8) ? Self.stringField("reason", in: line).map { String(decoding: $0, as: UTF8.self) } : nil
        worker.answered(code: String(decoding: code, as: UTF8.self), reason: reason, latency: now &- min(now, head.sentAt), at: now)
    }

    private func isoAnswer(_ body: ByteBuffer, at now: UInt64) {
        let decoded = body.withUnsafeReadableBytes { ISO8583.decode($0) }
        guard case .success(let message) = decoded, let code = message[39], code.count == 2,
              let stanText = message[11], let stan = UInt64(stanText) else {
            worker.error("unreadable answer")
            return
        }
        guard let request = isoInFlight.removeValue(forKey: stan) else {
            worker.error("answer with no request in flight")
            return
        }
        guard message[37] == worker.isoRRN(connection: number, sequence: request.sequence) else {
            worker.error("answer RRN does not match its STAN")
            return
        }
        worker.answered(code: code, reason: nil, latency: now &- min(now, request.sentAt), at: now)
    }

    /// The raw text of `"name":"…"` in the compact JSON the server writes.
    static func stringField(_ name: String, in line: ByteBufferView) -> ByteBufferView.SubSequence? {
        let key = Array("\"\(name)\":\"".utf8)
        var index = line.startIndex
        while index + key.count <= line.endIndex {
            if line[index..<(index + key.count)].elementsEqual(key) {
                let start = index + key.count
                var end = start
                while end < line.endIndex && line[end] != UInt8(ascii: "\"") {
                    end += line[end] == UInt8(ascii: "\\") ? 2 : 1
                }
                return end <= line.endIndex ? line[start..<end] : nil
            }
            index += 1
        }
        return nil
    }

    /// Gives up on this connection: what is in flight or still due counts as errors.
    func abandon(_ problem: String) {
        guard !finished else { return }
        worker.error(problem, count: inFlightCount)
        inFlight.removeAll()
        isoInFlight.removeAll()
        finish()
        close()
    }

    func channelInactive(context: ChannelHandlerContext) {
        abandon("connection closed by the server")
        self.context = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        abandon("connection error: \(error)")
    }

    private func finish() {
        guard !finished else { return }
        finished = true
        timer?.cancel()
        timer = nil
        if started { settle() }
    }

    private func settle() {
        if !worker.options.closedLoop && next < timetable.count {
            worker.error("not sent (connection lost or backlog at the end)", count: Int(timetable.count - next))
        }
        worker.connectionFinished()
    }

    func close() {
        guard let context else { return }
        self.context = nil
        context.close(promise: nil)
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

/// One terminal connection for single requests, each answer timestamped when
/// it arrives (for measurements that pace themselves, like the unlock probe).
public final class LineClient: Sendable {
    private let channel: Channel

    private init(channel: Channel) {
        self.channel = channel
    }

    public static func connect(to target: Target, on loop: EventLoop) -> EventLoopFuture<LineClient> {
        ClientBootstrap(group: loop)
            .connectTimeout(.seconds(5))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(LineClientHandler()) }
            }
            .connect(host: target.host, port: target.port)
            .map { LineClient(channel: $0) }
            .flatMapErrorThrowing { throw LoadGeneratorError.cannotConnect(target, $0) }
    }

    /// Sends one line; the future has the answer line and when it arrived.
    public func request(_ line: String) -> EventLoopFuture<(line: String, at: NIODeadline)> {
        let promise = channel.eventLoop.makePromise(of: (line: String, at: NIODeadline).self)
        channel.writeAndFlush(LineClientHandler.Request(line: line, promise: promise), promise: nil)
        return promise.futureResult
    }

    public func close() {
        channel.close(promise: nil)
    }
}

final class LineClientHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Request
    typealias OutboundOut = ByteBuffer

    struct Request: Sendable {
        let line: String
        let promise: EventLoopPromise<(line: String, at: NIODeadline)>
    }

    private var waiting = CircularBuffer<EventLoopPromise<(line: String, at: NIODeadline)>>()
    private var received = ByteBuffer()

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        waiting.append(request.promise)
        context.write(wrapOutboundOut(context.channel.allocator.buffer(string: request.line + "\n")), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let now = NIODeadline.now()
        var chunk = unwrapInboundIn(data)
        received.writeBuffer(&chunk)
        while let newline = received.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
            let line = received.readString(length: newline - received.readerIndex)!
            received.moveReaderIndex(forwardBy: 1)
            waiting.popFirst()?.succeed((line, now))
        }
        received.discardReadBytes()
    }

    func channelInactive(context: ChannelHandlerContext) {
        while let promise = waiting.popFirst() { promise.fail(ChannelError.eof) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
