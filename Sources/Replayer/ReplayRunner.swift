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
        public var endpoint: RedisEndpoint
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
        /// A Redis Cluster's seed nodes: drain every slot stream of every master.
        public var clusterSeeds: [RedisEndpoint]?
        /// On a cluster: how often every master is swept for slot streams
        /// (the safety net under the xadd keyevents).
        public var sweepIntervalSeconds: TimeInterval = 5

        public init(endpoint: RedisEndpoint, databasePath: String, consumer: String) {
            self.endpoint = endpoint
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

    /// Consumers that have held nothing for this long are removed from the group.
    static let forgetConsumersAfterMilliseconds = 3_600_000

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
        if let seeds = configuration.clusterSeeds { return try await runCluster(seeds: seeds) }
        let store = try await StatementStore(path: configuration.databasePath)
        let redis = RedisLink(endpoint: configuration.endpoint, commandTimeout: commandTimeout, logger: logger)
        defer { redis.close() }
        let trimmer = configuration.trimMaxLength.map { StreamTrimmer(redis: redis, maxLength: $0, logger: logger) }
        let (replayed, notified) = try await runConsumers(
            replay: { try await self.replay(store: store, redis: redis, trimmer: trimmer) },
            notify: configuration.notify ? { @Sendable in try await self.notify() } : nil
        )
        // The last pass, after both groups have acknowledged their batches.
        var trimmed = replayed.trimmed
        if let trimmer { trimmed += await trimPass(trimmer) }
        return Summary(replayed: replayed.stats, notified: notified, entriesPerSecond: replayed.rate, trimmed: trimmed)
    }

    /// The cluster: every slot stream of every master (see ClusterConsumer).
    private func runCluster(seeds: [RedisEndpoint]) async throws -> Summary {
        let store = try await StatementStore(path: configuration.databasePath)
        let ledger = try await ClusterLedger.connect(seeds: seeds, commandTimeout: commandTimeout, logger: logger)
        defer { ledger.close() }
        let (replayed, notified) = try await runConsumers(
            replay: { try await self.replayCluster(store: store, ledger: ledger) },
            notify: configuration.notify ? { @Sendable in try await self.notifyCluster(seeds: seeds) } : nil
        )
        // The last pass, after both groups have acknowledged their batches.
        let trimmed = replayed.trimmed + (await trim(replayed.streams, ledger: ledger))
        return Summary(replayed: replayed.stats, notified: notified, entriesPerSecond: replayed.rate, trimmed: trimmed)
    }

    /// What the replayer's task hands back.
    private struct Replayed: Sendable {
        var stats: ConsumerStats
        var rate: Double
        var trimmed: Int
        /// On a cluster: every slot stream seen (for the last trim pass).
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

    /// The replayer consumer of the single stream, with progress and trimming between batches.
    private func replay(store: StatementStore, redis: RedisLink, trimmer: StreamTrimmer?) async throws -> Replayed {
        let group = ConsumerGroup(redis: redis, stream: Keys.statements, group: configuration.group, consumer: configuration.consumer)
        let schedule = TrimSchedule(interval: configuration.trimIntervalSeconds)
        var trimmed = 0
        let progress = ProgressReporter(toTerminal: configuration.progressToTerminal, logger: logger) {
            guard let info = try? await redis.groups(of: Keys.statements).first(where: { $0.name == self.configuration.group }) else {
                return "lag unknown"
            }
            return "lag \(info.lag.map(String.init) ?? "unknown"), pending \(info.pending)"
        }
        let housekeeping: (ConsumerStats) async -> Void = { stats in
            await progress.update(stats)
            if let trimmer, schedule.due() { trimmed += await self.trimPass(trimmer) }
        }
        let loop = ConsumerLoop(
            group: group,
            sink: StatementStoreSink(store: store, group: configuration.group, consumer: configuration.consumer),
            options: configuration.consumerOptions, logger: logger,
            afterBatch: housekeeping, whenIdle: housekeeping
        )
        await forgetIdleConsumers(group)
        try await loop.run()
        let rate = progress.finish(loop.stats)
        return Replayed(stats: loop.stats, rate: rate, trimmed: trimmed)
    }

    /// The notifier consumer on its own connection.
    private func notify() async throws -> ConsumerStats {
        let redis = RedisLink(endpoint: configuration.endpoint, commandTimeout: commandTimeout, logger: logger)
        defer { redis.close() }
        let group = ConsumerGroup(redis: redis, stream: Keys.statements, group: configuration.notifyGroup, consumer: configuration.consumer)
        var options = configuration.consumerOptions
        options.killAfterCommits = nil
        let loop = ConsumerLoop(
            group: group,
            sink: NotificationSink(redis: redis, maxLength: configuration.notificationMaxLength),
            options: options, logger: logger
        )
        do {
            try await loop.run()
        } catch {
            logger.error("notifier stopped", metadata: ["error": "\(error)"])
            throw error
        }
        return loop.stats
    }

    /// The replayer consumer over every slot stream, trimming the streams it read.
    private func replayCluster(store: StatementStore, ledger: ClusterLedger) async throws -> Replayed {
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
        let consumer = ClusterConsumer(
            ledger: ledger,
            sink: StatementStoreSink(store: store, group: configuration.group, consumer: configuration.consumer),
            group: configuration.group, consumer: configuration.consumer, options: configuration.consumerOptions,
            sweepInterval: configuration.sweepIntervalSeconds, logger: logger,
            afterRound: { stats, round in
                touched.formUnion(round)
                sinceReport.formUnion(round)
                await progress.update(stats)
                if schedule.due() {
                    trimmed += await self.trim(touched, ledger: ledger)
                    touched.removeAll()
                }
            }
        )
        try await consumer.run()
        let rate = progress.finish(consumer.stats)
        return Replayed(stats: consumer.stats, rate: rate, trimmed: trimmed, streams: consumer.known)
    }

    /// The notifier consumer over every slot stream, on its own router and keyevent subscriptions.
    private func notifyCluster(seeds: [RedisEndpoint]) async throws -> ConsumerStats {
        do {
            let ledger = try await ClusterLedger.connect(seeds: seeds, commandTimeout: commandTimeout, logger: logger)
            defer { ledger.close() }
            var options = configuration.consumerOptions
            options.killAfterCommits = nil
            let consumer = ClusterConsumer(
                ledger: ledger, sink: ClusterNotificationSink(ledger: ledger, maxLength: configuration.notificationMaxLength),
                group: configuration.notifyGroup, consumer: configuration.consumer, options: options,
                sweepInterval: configuration.sweepIntervalSeconds, logger: logger
            )
            try await consumer.run()
            return consumer.stats
        } catch {
            logger.error("notifier stopped", metadata: ["error": "\(error)"])
            throw error
        }
    }

    /// One trim pass of the single stream; a failure is logged and retried at the next pass.
    private func trimPass(_ trimmer: StreamTrimmer) async -> Int {
        do {
            return try await trimmer.trim().removed
        } catch {
            logger.warning("could not trim the statements stream", metadata: ["error": "\(error)"])
            return 0
        }
    }

    /// One trim pass over some slot streams, each on the master of its slot.
    private func trim(_ streams: Set<String>, ledger: ClusterLedger) async -> Int {
        guard let maxLength = configuration.trimMaxLength else { return 0 }
        var removed = 0
        for stream in streams.sorted() {
            do {
                let trimmer = StreamTrimmer(redis: ledger.redis(forKey: stream), stream: stream, maxLength: maxLength, logger: logger)
                removed += try await trimmer.trim().removed
            } catch {
                logger.warning("could not trim a statements stream", metadata: ["stream": "\(stream)", "error": "\(error)"])
            }
        }
        return removed
    }

    private func forgetIdleConsumers(_ group: ConsumerGroup) async {
        do {
            try await group.createIfMissing()
            let forgotten = try await group.forgetIdleConsumers(idleMilliseconds: Self.forgetConsumersAfterMilliseconds)
            if !forgotten.isEmpty {
                logger.info("removed idle consumers holding nothing", metadata: ["consumers": "\(forgotten.joined(separator: ","))"])
            }
        } catch {
            // Best effort: the consumer loop reports (and retries) Redis trouble.
            logger.debug("could not tidy the consumer list", metadata: ["error": "\(error)"])
        }
    }
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
