import AuthorizerCore
import Foundation
import Logging
import NIOCore
import RedisWire

/// How far the replayer is behind the statements stream.
public struct LagReport: Sendable, Equatable, CustomStringConvertible {
    public let group: String
    /// False when the group does not exist yet (no replayer ever ran): then
    /// every entry of the stream counts as not applied.
    public let groupExists: Bool
    public let streamLength: Int
    /// Entries not yet delivered to the group; nil when Redis cannot tell.
    public let undelivered: Int?
    /// Delivered to a replayer and not yet acknowledged.
    public let pending: Int
    /// Age of the oldest entry not yet acknowledged (0 when caught up); nil
    /// when the Redis user may not run XPENDING / XRANGE.
    public let oldestUnappliedAge: TimeAmount?
    /// True when past either threshold of the monitor.
    public let isLagging: Bool

    /// Entries not yet in the database, as far as Redis can tell.
    public var unapplied: Int { (undelivered ?? 0) + pending }

    public var description: String {
        let undeliveredText = undelivered.map(String.init) ?? "unknown"
        let ageText = oldestUnappliedAge.map { "\($0.nanoseconds / 1_000_000) ms" } ?? "unknown"
        return "group \(group): \(undeliveredText) undelivered, \(pending) pending, oldest unapplied \(ageText), stream length \(streamLength)"
    }
}

/// Watches the replayer's consumer group from `serve`: the trimmer never
/// drops what the replayer has not acknowledged, so a stopped replayer makes
/// the stream (and Redis memory) grow. `check()` reads `XINFO GROUPS
/// statements` and XLEN (plus XPENDING or XRANGE for the age, skipped when
/// the Redis user may not run them) without side effects;
/// `start` runs it periodically, logs a warning while lagging and an info
/// line on recovery, and hands every report to `onReport` (for a metric).
public final class ReplayerLagMonitor: Sendable {
    public struct Threshold: Sendable {
        /// Lagging when more entries than this are not yet applied ...
        public var maxUnappliedEntries: Int
        /// ... or when the oldest of them is older than this.
        public var maxAge: TimeAmount

        public init(maxUnappliedEntries: Int = 100_000, maxAge: TimeAmount = .seconds(60)) {
            precondition(maxUnappliedEntries >= 0)
            self.maxUnappliedEntries = maxUnappliedEntries
            self.maxAge = maxAge
        }
    }

    private let redis: RedisClient
    private let group: String
    private let stream: String
    private let threshold: Threshold
    private let logger: Logger
    private let wasLagging: NIOLoopBoundBox<Bool>
    /// Checks in a row that found the replayer lagging; the warning repeats every `repeatEvery` of them.
    private let laggingChecks: NIOLoopBoundBox<Int>
    private static let repeatEvery = 6

    public init(
        redis: RedisClient, group: String = Keys.replayGroup, stream: String = Keys.statements,
        threshold: Threshold = Threshold(), logger: Logger
    ) {
        self.redis = redis
        self.group = group
        self.stream = stream
        self.threshold = threshold
        self.logger = logger
        self.wasLagging = NIOLoopBoundBox.makeBoxSendingValue(false, eventLoop: redis.eventLoop)
        self.laggingChecks = NIOLoopBoundBox.makeBoxSendingValue(0, eventLoop: redis.eventLoop)
    }

    /// One look at the group. Fails only when Redis does.
    public func check() -> EventLoopFuture<LagReport> {
        let redis = self.redis, stream = self.stream, group = self.group, threshold = self.threshold
        let length = redis.send(RedisCommand("XLEN", stream)).map { Int($0.int ?? 0) }
        let groups = redis.send(RedisCommand("XINFO", "GROUPS", stream))
            .flatMapThrowing { try GroupInfo.parseAll($0) }
            .flatMapError { error -> EventLoopFuture<[GroupInfo]> in
                if case RedisError.server(let message) = error, message.contains("no such key") {
                    return redis.eventLoop.makeSucceededFuture([])
                }
                return redis.eventLoop.makeFailedFuture(error)
            }
        return length.and(groups).flatMap { length, groups in
            let info = groups.first { $0.name == group }
            return Self.oldestUnapplied(info: info, redis: redis, stream: stream).map { oldest in
                let age = oldest.map { id -> TimeAmount in
                    guard let id else { return .zero }
                    let now = UInt64(max(0, Date().timeIntervalSince1970 * 1000))
                    return .milliseconds(Int64(now > id.milliseconds ? now - id.milliseconds : 0))
                }
                let undelivered = info == nil ? length : info?.lag
                let pending = info?.pending ?? 0
                let lagging = (undelivered ?? 0) + pending > threshold.maxUnappliedEntries || (age.map { $0 > threshold.maxAge } ?? false)
                return LagReport(
                    group: group, groupExists: info != nil, streamLength: length, undelivered: undelivered,
                    pending: pending, oldestUnappliedAge: age, isLagging: lagging
                )
            }
        }
    }

    /// The id of the oldest entry the group has not acknowledged: .some(nil)
    /// when there is none, nil when this Redis user may not look (NOPERM).
    private static func oldestUnapplied(info: GroupInfo?, redis: RedisClient, stream: String) -> EventLoopFuture<StreamID??> {
        let lookup: EventLoopFuture<StreamID?>
        if let info, info.pending > 0 {
            lookup = redis.send(RedisCommand("XPENDING", stream, info.name)).flatMapThrowing { try PendingSummary.parse($0).smallest }
        } else {
            let start = info.map { "(\($0.lastDeliveredID)" } ?? "-"
            lookup = redis.send(RedisCommand("XRANGE", stream, start, "+", "COUNT", "1")).flatMapThrowing { reply in
                try StreamReply.entries(reply).first?.id
            }
        }
        return lookup.map { .some($0) }.flatMapError { error in
            if (error as? RedisError)?.kind == .noPermission {
                return redis.eventLoop.makeSucceededFuture(nil)
            }
            return redis.eventLoop.makeFailedFuture(error)
        }
    }

    /// Checks every `interval` on the client's event loop; cancel the
    /// returned task to stop. Failures to reach Redis are logged at debug
    /// level only: `serve` reports Redis trouble elsewhere.
    public func start(every interval: TimeAmount = .seconds(10), onReport: @escaping @Sendable (LagReport) -> Void = { _ in }) -> RepeatedTask {
        redis.eventLoop.scheduleRepeatedAsyncTask(initialDelay: .zero, delay: interval) { _ in
            self.check().map { report in
                self.record(report)
                onReport(report)
            }.recover { error in
                self.logger.debug("replayer lag check failed", metadata: ["error": "\(error)"])
            }
        }
    }

    private func record(_ report: LagReport) {
        let metadata: Logger.Metadata = [
            "group": "\(report.group)", "undelivered": "\(report.undelivered.map(String.init) ?? "unknown")",
            "pending": "\(report.pending)",
            "oldest_unapplied_ms": "\(report.oldestUnappliedAge.map { String($0.nanoseconds / 1_000_000) } ?? "unknown")",
            "stream_length": "\(report.streamLength)",
        ]
        laggingChecks.value = report.isLagging ? laggingChecks.value + 1 : 0
        if report.isLagging && (laggingChecks.value - 1) % Self.repeatEvery == 0 {
            logger.warning("replayer is lagging: the statements stream cannot be trimmed past it", metadata: metadata)
        } else if !report.isLagging && wasLagging.value {
            logger.info("replayer caught up", metadata: metadata)
        }
        wasLagging.value = report.isLagging
    }
}
