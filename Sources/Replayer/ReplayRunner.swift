import AuthorizerCore
import Foundation
import Ledger
import Logging
import NIOCore
import RedisWire

/// Everything `authorizer replay` does, wired together: the replayer
/// consumer (statements -> SQLite) and optionally the notifier consumer, each
/// a task of one task group with its own connection, the stream trimmer and
/// progress reports between batches.
public final class ReplayRunner: Sendable {
    public struct Configuration: Sendable {
        /// One Redis or a cluster: the consumers read every ledger stream it holds.
        public var target: RedisTarget
        public var databasePath: String
        public var group = Keys.replayGroup
        public var consumer: String
        public var consumerOptions = ConsumerOptions()
        public var notify = false
        public var notifyGroup = Keys.notifyGroup
        public var notificationMaxLength = 100
        /// nil: never trim the stream.
        public var trimMaxLength: Int? = 1_000_000
        public var trimIntervalSeconds: TimeInterval = 5
        public var progressToTerminal = false
        /// How often every master is swept for ledger streams (the safety
        /// net under the xadd keyevents).
        public var sweepIntervalSeconds: TimeInterval = 5

        public init(target: RedisTarget, databasePath: String, consumer: String) {
            self.target = target
            self.databasePath = databasePath
            self.consumer = consumer
        }
    }

    public struct Summary: Sendable {
        public let replayed: ConsumerStats
        public let notified: ConsumerStats?
        public let entriesPerSecond: Double
        public let trimmed: Int
    }

    private let configuration: Configuration
    private let logger: Logger

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// The default consumer name: unique per process, readable in XINFO CONSUMERS.
    public static func defaultConsumerName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        let host = gethostname(&buffer, buffer.count) == 0
            ? String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            : "host"
        return "\(host)-\(getpid())"
    }

    /// Runs until its task is cancelled (each consumer finishes its batch in
    /// hand) or, with `drain`, until caught up.
    public func run() async throws -> Summary {
        let store = try await StatementStore(path: configuration.databasePath)
        let ledger = LedgerClient(target: configuration.target, commandTimeout: commandTimeout, logger: logger)
        defer { ledger.close() }
        let (replayed, notified) = try await runConsumers(
            replay: { try await self.replay(store: store, ledger: ledger) },
            notify: configuration.notify ? { @Sendable in try await self.notify() } : nil
        )
        // The last pass, after both groups have acknowledged their batches.
        let trimmed = replayed.trimmed + (await trim(replayed.streams, ledger: ledger).removed)
        return Summary(replayed: replayed.stats, notified: notified, entriesPerSecond: replayed.rate, trimmed: trimmed)
    }

    /// What the replayer's task hands back.
    private struct Replayed: Sendable {
        var stats: ConsumerStats
        var rate: Double
        var trimmed: Int
        /// Every ledger stream seen (for the last trim pass).
        var streams: Set<String> = []
    }

    /// The replayer and, with `notify`, the notifier: one task each, in one
    /// group. When either fails the other is cancelled (it finishes its batch
    /// in hand) and the failure is thrown once both have stopped.
    private func runConsumers(
        replay: @escaping @Sendable () async throws -> Replayed,
        notify: (@Sendable () async throws -> ConsumerStats)?
    ) async throws -> (Replayed, ConsumerStats?) {
        enum Part: Sendable {
            case replayed(Replayed)
            case notified(ConsumerStats)
        }
        return try await withThrowingTaskGroup(of: Part.self) { tasks in
            tasks.addTask { .replayed(try await replay()) }
            if let notify { tasks.addTask { .notified(try await notify()) } }
            var replayed: Replayed?
            var notified: ConsumerStats?
            do {
                for try await part in tasks {
                    switch part {
                    case .replayed(let part): replayed = part
                    case .notified(let stats): notified = stats
                    }
                }
            } catch {
                tasks.cancelAll()
                throw error
            }
            guard let replayed else { throw CancellationError() }
            return (replayed, notified)
        }
    }

    private var commandTimeout: TimeAmount {
        .milliseconds(Int64(configuration.consumerOptions.commandTimeoutMilliseconds))
    }

    /// The replayer consumer over every ledger stream, with progress reports
    /// and trim passes between rounds: a pass trims the streams read since
    /// the last one and those a lagging group kept long.
    private func replay(store: StatementStore, ledger: LedgerClient) async throws -> Replayed {
        let schedule = TrimSchedule(interval: configuration.trimIntervalSeconds)
        var trimmed = 0
        // Streams read since the last trim pass / the last lag report.
        var touched: Set<String> = []
        var sinceReport: Set<String> = []
        let progress = ProgressReporter(toTerminal: configuration.progressToTerminal, logger: logger) {
            // Streams nobody wrote since they were last read have no lag: sum the others.
            let streams = sinceReport.sorted()
            sinceReport.removeAll()
            guard let replies = try? await ledger.pipeline(streams.map { ($0, ["XINFO", "GROUPS", $0]) }) else { return "lag unknown" }
            var lag = 0
            var pending = 0
            for reply in replies {
                guard let info = (try? GroupInfo.parseAll(reply))?.first(where: { $0.name == self.configuration.group }) else { continue }
                guard let streamLag = info.lag else { return "lag unknown" }
                lag += streamLag
                pending += info.pending
            }
            return "lag \(lag), pending \(pending) (\(streams.count) streams)"
        }
        let consumer = StreamConsumer(
            ledger: ledger,
            sink: StatementStoreSink(store: store, group: configuration.group, consumer: configuration.consumer),
            group: configuration.group, consumer: configuration.consumer, options: configuration.consumerOptions,
            sweepInterval: configuration.sweepIntervalSeconds, logger: logger,
            afterRound: { stats, round in
                touched.formUnion(round)
                sinceReport.formUnion(round)
                await progress.update(stats)
                if schedule.due() {
                    let pass = await self.trim(touched, ledger: ledger)
                    trimmed += pass.removed
                    touched = pass.stillLong
                }
            }
        )
        try await consumer.run()
        let rate = progress.finish(consumer.stats)
        return Replayed(stats: consumer.stats, rate: rate, trimmed: trimmed, streams: consumer.known)
    }

    /// The notifier consumer over every ledger stream, on its own connections and keyevent subscriptions.
    private func notify() async throws -> ConsumerStats {
        let ledger = LedgerClient(target: configuration.target, commandTimeout: commandTimeout, logger: logger)
        defer { ledger.close() }
        var options = configuration.consumerOptions
        options.killAfterCommits = nil
        let consumer = StreamConsumer(
            ledger: ledger, sink: NotificationSink(ledger: ledger, maxLength: configuration.notificationMaxLength),
            group: configuration.notifyGroup, consumer: configuration.consumer, options: options,
            sweepInterval: configuration.sweepIntervalSeconds, logger: logger
        )
        do {
            try await consumer.run()
        } catch {
            logger.error("notifier stopped", metadata: ["error": "\(error)"])
            throw error
        }
        return consumer.stats
    }

    /// One trim pass over some ledger streams, each on the master of its
    /// slot; a failure is logged and retried at the next pass. `stillLong`:
    /// the streams left more than a stream node (100 entries) above the cap,
    /// because some group has not acknowledged them yet.
    private func trim(_ streams: Set<String>, ledger: LedgerClient) async -> (removed: Int, stillLong: Set<String>) {
        guard let maxLength = configuration.trimMaxLength else { return (0, []) }
        var removed = 0
        var stillLong: Set<String> = []
        for stream in streams.sorted() {
            do {
                let trimmer = StreamTrimmer(redis: ledger.redis(forKey: stream), stream: stream, maxLength: maxLength, logger: logger)
                let pass = try await trimmer.trim()
                removed += pass.removed
                if pass.lengthBefore - pass.removed - maxLength > Self.streamNodeEntries { stillLong.insert(stream) }
            } catch {
                stillLong.insert(stream)
                logger.warning("could not trim a statements stream", metadata: ["stream": "\(stream)", "error": "\(error)"])
            }
        }
        return (removed, stillLong)
    }

    /// Redis's `stream-node-max-entries` default: `XTRIM ~` removes whole nodes only.
    static let streamNodeEntries = 100
}
/// When the next trim pass is due (every `interval` seconds).
final class TrimSchedule {
    private let interval: TimeInterval
    private var last = Date()

    init(interval: TimeInterval) {
        self.interval = interval
    }

    /// True at most once per interval; the pass counts from now.
    func due() -> Bool {
        guard Date().timeIntervalSince(last) >= interval else { return false }
        last = Date()
        return true
    }
}
