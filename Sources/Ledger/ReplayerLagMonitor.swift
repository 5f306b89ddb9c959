import Logging
import NIOCore

/// Watches the replayer's consumer group from `serve`: the trimmer never
/// drops what the replayer has not acknowledged, so a stopped replayer makes
/// the ledger (and Redis memory) grow. `start` reads the lag periodically
/// through `read` (without side effects), logs a warning while lagging and
/// an info line on recovery, and hands every reading to `onReport` (for the
/// gauges).
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

        public func isLagging(_ lag: ReplayerLag) -> Bool {
            (lag.unapplied ?? 0) > maxUnappliedEntries
                || (lag.oldestUnappliedSeconds.map { $0 * 1_000 > Double(maxAge.nanoseconds / 1_000_000) } ?? false)
        }
    }

    private let eventLoop: EventLoop
    private let read: @Sendable () -> EventLoopFuture<ReplayerLag>
    private let group: String
    private let threshold: Threshold
    private let logger: Logger
    private let wasLagging: NIOLoopBoundBox<Bool>
    /// Checks in a row that found the replayer lagging; the warning repeats
    /// once a minute (every `repeatEvery` checks, set by `start`).
    private let laggingChecks: NIOLoopBoundBox<Int>
    private let repeatEvery: NIOLoopBoundBox<Int>
    static let warningInterval = TimeAmount.seconds(60)

    public init(
        eventLoop: EventLoop, group: String, threshold: Threshold = Threshold(), logger: Logger,
        read: @escaping @Sendable () -> EventLoopFuture<ReplayerLag>
    ) {
        self.eventLoop = eventLoop
        self.read = read
        self.group = group
        self.threshold = threshold
        self.logger = logger
        self.wasLagging = NIOLoopBoundBox.makeBoxSendingValue(false, eventLoop: eventLoop)
        self.laggingChecks = NIOLoopBoundBox.makeBoxSendingValue(0, eventLoop: eventLoop)
        self.repeatEvery = NIOLoopBoundBox.makeBoxSendingValue(6, eventLoop: eventLoop)
    }

    /// Checks every `interval` on the event loop; cancel the returned task
    /// to stop. Failures to reach Redis are logged at debug level only:
    /// `serve` reports Redis trouble elsewhere.
    public func start(every interval: TimeAmount = .seconds(10), onReport: @escaping @Sendable (ReplayerLag) -> Void = { _ in }) -> RepeatedTask {
        precondition(interval > .zero)
        let checksPerWarning = max(1, Int(Self.warningInterval.nanoseconds / interval.nanoseconds))
        return eventLoop.scheduleRepeatedAsyncTask(initialDelay: .zero, delay: interval) { _ in
            self.repeatEvery.value = checksPerWarning
            return self.read().hop(to: self.eventLoop).map { lag in
                self.record(lag)
                onReport(lag)
            }.recover { error in
                self.logger.debug("replayer lag check failed", metadata: ["error": "\(error)"])
            }
        }
    }

    private func record(_ lag: ReplayerLag) {
        let lagging = threshold.isLagging(lag)
        let metadata: Logger.Metadata = [
            "group": "\(group)", "undelivered": "\(lag.undelivered.map(String.init) ?? "unknown")",
            "pending": "\(lag.pending)",
            "oldest_unapplied_ms": "\(lag.oldestUnappliedSeconds.map { String(Int(($0 * 1_000).rounded())) } ?? "unknown")",
            "stream_length": "\(lag.length)", "streams": "\(lag.streams)",
        ]
        laggingChecks.value = lagging ? laggingChecks.value + 1 : 0
        if lagging && (laggingChecks.value - 1) % repeatEvery.value == 0 {
            logger.warning("replayer is lagging: the statements stream cannot be trimmed past it", metadata: metadata)
        } else if !lagging && wasLagging.value {
            logger.info("replayer caught up", metadata: metadata)
        }
        wasLagging.value = lagging
    }
}
