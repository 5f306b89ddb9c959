import AuthorizerCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import NIOConcurrencyHelpers
import NIOCore
import RedisWire

/// Sets, once per interval and off the request path, the gauges that are
/// cheaper to sample than to track: account contention in the shards and the
/// state of the statements stream. A sample starts only after the previous
/// one finished, so a slow Redis never piles samples up.
public final class MetricsSampler: Sendable {
    private let task: RepeatedTask

    private init(task: RepeatedTask) {
        self.task = task
    }

    public static func start(
        authorizer: Authorizer,
        redis: RedisClient,
        metrics: ServerMetrics,
        interval: TimeAmount = .seconds(1),
        readsStream: Bool = true,
        logger: Logger
    ) -> MetricsSampler {
        let loop = redis.eventLoop
        let failing = NIOLockedValueBox(false)
        let task = loop.scheduleRepeatedAsyncTask(initialDelay: .zero, delay: interval) { _ in
            let contention = authorizer.contention().hop(to: loop).map { metrics.contention(accounts: $0.accounts, waiters: $0.waiters) }
            // On a cluster the ledger is one stream per slot: its gauges are not sampled here.
            let stream = readsStream
                ? StatementsStreamStatus.read(from: redis).map { metrics.statementsStream($0) }
                : redis.eventLoop.makeSucceededVoidFuture()
            return contention.and(stream).map { _ in
                if failing.withLockedValue({ $0 }) {
                    failing.withLockedValue { $0 = false }
                    logger.info("metrics sampling recovered")
                }
            }.recover { error in
                let first = failing.withLockedValue { state -> Bool in
                    defer { state = true }
                    return !state
                }
                if first { logger.warning("metrics sampling failed; gauges keep their last values", metadata: ["error": "\(error)"]) }
            }
        }
        return MetricsSampler(task: task)
    }

    public func stop() {
        task.cancel()
    }
}

/// The statements stream as the replayer's consumer group sees it, read
/// with XINFO STREAM and XINFO GROUPS, plus TIME and one bounded XRANGE when
/// the replayer is behind. A Redis user that may not run TIME gets the local
/// clock; one that may not run XRANGE gets an unknown age (and an unknown
/// lag when Redis cannot report it).
public struct StatementsStreamStatus: Sendable, Equatable {
    public static let replayerGroup = "replayer"
    /// When Redis cannot tell the group's lag, at most this many entries are counted.
    public static let maxCountedLag = 1_000

    /// XLEN statements.
    public var length: Int64 = 0
    public var groupExists = false
    /// Entries not yet delivered to the group; the whole stream while the
    /// group does not exist; nil when it cannot be told.
    public var lagEntries: Int64? = 0
    /// True when `lagEntries` was counted and reached `maxCountedLag` (the lag is at least that).
    public var lagIsLowerBound = false
    /// Age of the oldest entry not yet delivered, by Redis' clock; 0 when
    /// none; nil when it cannot be told.
    public var lagSeconds: Double? = 0
    /// Delivered to a consumer of the group, not acknowledged yet.
    public var pendingEntries: Int64 = 0
    /// Consumers in the group.
    public var consumers: Int64 = 0

    public init() {}

    public static func read(from redis: RedisClient, stream: String = Keys.statements, group: String = replayerGroup) -> EventLoopFuture<StatementsStreamStatus> {
        let info = redis.send(RedisCommand("XINFO", "STREAM", stream)).map { Optional(XInfo.fields($0)) }.flatMapError(missingKey(nil, on: redis.eventLoop))
        let groups = redis.send(RedisCommand("XINFO", "GROUPS", stream)).map { ($0.array ?? []).map(XInfo.fields) }.flatMapError(missingKey([], on: redis.eventLoop))
        let time = redis.send(RedisCommand("TIME")).map { XInfo.millis(time: $0) }.recover { _ in nil }
        return info.and(groups).and(time).flatMap { combined -> EventLoopFuture<StatementsStreamStatus> in
            let ((info, groups), time) = combined
            var status = StatementsStreamStatus()
            guard let info else { return redis.eventLoop.makeSucceededFuture(status) }
            let nowMillis = time ?? XInfo.localMillis()
            status.length = info["length"]?.int ?? 0
            guard let group = groups.first(where: { $0["name"]?.string == group }) else {
                status.lagEntries = status.length
                if let first = info["first-entry"]?.array?.first?.string.flatMap(StreamPosition.init) {
                    status.lagSeconds = first.age(nowMillis: nowMillis)
                }
                return redis.eventLoop.makeSucceededFuture(status)
            }
            status.groupExists = true
            status.pendingEntries = group["pending"]?.int ?? 0
            status.consumers = group["consumers"]?.int ?? 0
            let lastDelivered = group["last-delivered-id"]?.string.flatMap(StreamPosition.init) ?? StreamPosition(millis: 0, sequence: 0)
            let lastGenerated = info["last-generated-id"]?.string.flatMap(StreamPosition.init) ?? lastDelivered
            // Redis 7 reports the lag; it is null after deletions it cannot
            // account for, and then `entries-added - entries-read` or a count stands in.
            let reported = group["lag"]?.int ?? info["entries-added"]?.int.flatMap { added in
                group["entries-read"]?.int.map { added - $0 }
            }
            if reported == 0 || !(lastDelivered < lastGenerated) {
                return redis.eventLoop.makeSucceededFuture(status)
            }
            let count = reported == nil ? maxCountedLag : 1
            let known = status
            var unknown = status
            unknown.lagEntries = reported
            unknown.lagSeconds = nil
            let unknownAge = unknown
            return redis.send(RedisCommand("XRANGE", stream, "(\(lastDelivered)", "+", "COUNT", String(count))).map { reply in
                var status = known
                let entries = reply.array ?? []
                if let reported {
                    status.lagEntries = reported
                } else {
                    status.lagEntries = Int64(entries.count)
                    status.lagIsLowerBound = entries.count >= maxCountedLag
                }
                if let oldest = entries.first?.array?.first?.string.flatMap(StreamPosition.init) {
                    status.lagSeconds = oldest.age(nowMillis: nowMillis)
                }
                return status
            }.recover { _ in unknownAge }
        }
    }

    /// `ERR no such key` (no statement written yet) reads as `empty`.
    private static func missingKey<Value: Sendable>(_ empty: Value, on loop: EventLoop) -> @Sendable (Error) -> EventLoopFuture<Value> {
        { error in
            if case RedisError.server(let message) = error, message.contains("no such key") {
                return loop.makeSucceededFuture(empty)
            }
            return loop.makeFailedFuture(error)
        }
    }
}

/// A stream entry id: milliseconds of Redis' clock and a sequence number.
struct StreamPosition: Comparable, CustomStringConvertible {
    let millis: UInt64
    let sequence: UInt64

    init(millis: UInt64, sequence: UInt64) {
        self.millis = millis
        self.sequence = sequence
    }

    init?(_ text: String) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, let millis = UInt64(parts[0]), let sequence = UInt64(parts[1]) else { return nil }
        self.init(millis: millis, sequence: sequence)
    }

    var description: String { "\(millis)-\(sequence)" }

    static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.millis, lhs.sequence) < (rhs.millis, rhs.sequence)
    }

    func age(nowMillis: UInt64) -> Double {
        guard nowMillis > millis else { return 0 }
        return Double(nowMillis - millis) / 1_000
    }
}

/// XINFO replies (RESP2: flat arrays of name, value).
enum XInfo {
    static func fields(_ value: RESPValue) -> [String: RESPValue] {
        var result: [String: RESPValue] = [:]
        let items = value.array ?? []
        var index = 0
        while index + 1 < items.count {
            if let name = items[index].string { result[name] = items[index + 1] }
            index += 2
        }
        return result
    }

    static func localMillis() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UInt64(now.tv_sec) * 1_000 + UInt64(now.tv_nsec) / 1_000_000
    }

    /// Milliseconds since the epoch from a TIME reply.
    static func millis(time: RESPValue) -> UInt64? {
        guard let parts = time.array, parts.count == 2,
              let seconds = parts[0].int, let micros = parts[1].int, seconds >= 0, micros >= 0 else { return nil }
        return UInt64(seconds) * 1_000 + UInt64(micros) / 1_000
    }
}
