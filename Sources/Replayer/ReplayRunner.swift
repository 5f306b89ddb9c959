import AuthorizerCore
import Foundation
import Ledger
import Logging
import NIOCore
import RedisWire

/// Everything `authorizer replay` does, wired together: the replayer
/// consumer (statements -> SQLite), optionally the notifier consumer on its
/// own thread and connection, the stream trimmer and progress reports.
public final class ReplayRunner {
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

    public func run(stop: StopSignal) throws -> Summary {
        if let seeds = configuration.clusterSeeds { return try runCluster(seeds: seeds, stop: stop) }
        let store = try StatementStore(path: configuration.databasePath)
        let timeout = TimeAmount.milliseconds(Int64(configuration.consumerOptions.commandTimeoutMilliseconds))
        let redis = BlockingRedis(endpoint: configuration.endpoint, commandTimeout: timeout, logger: logger)
        defer { redis.close() }

        var notifierThread: NotifierThread?
        if configuration.notify {
            let thread = NotifierThread(configuration: configuration, timeout: timeout, stop: stop, logger: logger)
            thread.start()
            notifierThread = thread
        }

        let group = ConsumerGroup(redis: redis, stream: Keys.statements, group: configuration.group, consumer: configuration.consumer)
        let trimmer = configuration.trimMaxLength.map { StreamTrimmer(redis: redis, maxLength: $0, logger: logger) }
        var trimmed = 0
        var lastTrim = Date()
        func trimIfDue(force: Bool = false) {
            guard let trimmer, force || Date().timeIntervalSince(lastTrim) >= configuration.trimIntervalSeconds else { return }
            lastTrim = Date()
            do {
                trimmed += try trimmer.trim().removed
            } catch {
                logger.warning("could not trim the statements stream", metadata: ["error": "\(error)"])
            }
        }
        let progress = ProgressReporter(toTerminal: configuration.progressToTerminal, logger: logger) {
            guard let info = try? redis.groups(of: Keys.statements).first(where: { $0.name == self.configuration.group }) else {
                return "lag unknown"
            }
            return "lag \(info.lag.map(String.init) ?? "unknown"), pending \(info.pending)"
        }
        let loop = ConsumerLoop(
            group: group,
            sink: StatementStoreSink(store: store, group: configuration.group, consumer: configuration.consumer),
            options: configuration.consumerOptions, stop: stop, logger: logger,
            afterBatch: { stats in
                progress.update(stats)
                trimIfDue()
            },
            whenIdle: { stats in
                progress.update(stats)
                trimIfDue()
            }
        )

        var loopError: Error?
        do {
            forgetIdleConsumers(group)
            try loop.run()
        } catch {
            loopError = error
            stop.stop()
        }
        let rate = progress.finish(loop.stats)
        let notified = notifierThread.map { $0.join() }
        if let loopError { throw loopError }
        if let failure = notifierThread?.failure { throw failure }
        // The last pass, after both groups have acknowledged their batches.
        trimIfDue(force: true)
        return Summary(replayed: loop.stats, notified: notified, entriesPerSecond: rate, trimmed: trimmed)
    }

    /// The cluster: every slot stream of every master (see ClusterConsumer).
    private func runCluster(seeds: [RedisEndpoint], stop: StopSignal) throws -> Summary {
        let store = try StatementStore(path: configuration.databasePath)
        let timeout = TimeAmount.milliseconds(Int64(configuration.consumerOptions.commandTimeoutMilliseconds))
        let ledger = try ClusterLedger(seeds: seeds, commandTimeout: timeout, logger: logger)
        defer { ledger.close() }

        var notifierThread: ClusterNotifierThread?
        if configuration.notify {
            let thread = ClusterNotifierThread(configuration: configuration, seeds: seeds, timeout: timeout, stop: stop, logger: logger)
            thread.start()
            notifierThread = thread
        }

        var trimmed = 0
        var lastTrim = Date()
        // Streams read since the last trim pass / the last lag report.
        var touched: Set<String> = []
        var sinceReport: Set<String> = []
        func trim(_ streams: Set<String>) {
            guard let maxLength = configuration.trimMaxLength else { return }
            for stream in streams.sorted() {
                do {
                    let trimmer = StreamTrimmer(redis: ledger.redis(forKey: stream), stream: stream, maxLength: maxLength, logger: logger)
                    trimmed += try trimmer.trim().removed
                } catch {
                    logger.warning("could not trim a statements stream", metadata: ["stream": "\(stream)", "error": "\(error)"])
                }
            }
        }
        func trimIfDue() {
            guard Date().timeIntervalSince(lastTrim) >= configuration.trimIntervalSeconds else { return }
            lastTrim = Date()
            trim(touched)
            touched.removeAll()
        }
        let progress = ProgressReporter(toTerminal: configuration.progressToTerminal, logger: logger) {
            // Streams nobody wrote since they were last read have no lag: sum the others.
            let streams = sinceReport.sorted()
            sinceReport.removeAll()
            guard let replies = try? ledger.pipeline(streams.map { ($0, ["XINFO", "GROUPS", $0]) }) else { return "lag unknown" }
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
            sweepInterval: configuration.sweepIntervalSeconds, stop: stop, logger: logger,
            afterRound: { stats, round in
                touched.formUnion(round)
                sinceReport.formUnion(round)
                progress.update(stats)
                trimIfDue()
            }
        )
        var loopError: Error?
        do {
            try consumer.run()
        } catch {
            loopError = error
            stop.stop()
        }
        let rate = progress.finish(consumer.stats)
        let notified = notifierThread.map { $0.join() }
        if let loopError { throw loopError }
        if let failure = notifierThread?.failure { throw failure }
        // The last pass, after both groups have acknowledged their batches.
        trim(consumer.known)
        return Summary(replayed: consumer.stats, notified: notified, entriesPerSecond: rate, trimmed: trimmed)
    }

    private func forgetIdleConsumers(_ group: ConsumerGroup) {
        do {
            try group.createIfMissing()
            let forgotten = try group.forgetIdleConsumers(idleMilliseconds: Self.forgetConsumersAfterMilliseconds)
            if !forgotten.isEmpty {
                logger.info("removed idle consumers holding nothing", metadata: ["consumers": "\(forgotten.joined(separator: ","))"])
            }
        } catch {
            // Best effort: the consumer loop reports (and retries) Redis trouble.
            logger.debug("could not tidy the consumer list", metadata: ["error": "\(error)"])
        }
    }
}

/// The notifier consumer on its own thread and Redis connection.
private final class NotifierThread: @unchecked Sendable {
    private let configuration: ReplayRunner.Configuration
    private let timeout: TimeAmount
    private let stop: StopSignal
    private let logger: Logger
    private let done = DispatchSemaphore(value: 0)
    // Written by the thread before it signals `done`; read after `join`.
    private var stats = ConsumerStats()
    private(set) var failure: Error?

    init(configuration: ReplayRunner.Configuration, timeout: TimeAmount, stop: StopSignal, logger: Logger) {
        self.configuration = configuration
        self.timeout = timeout
        self.stop = stop
        self.logger = logger
    }

    func start() {
        let thread = Thread { self.main() }
        thread.name = "notifier"
        thread.start()
    }

    private func main() {
        defer { done.signal() }
        let redis = BlockingRedis(endpoint: configuration.endpoint, commandTimeout: timeout, logger: logger)
        defer { redis.close() }
        let group = ConsumerGroup(redis: redis, stream: Keys.statements, group: configuration.notifyGroup, consumer: configuration.consumer)
        var options = configuration.consumerOptions
        options.killAfterCommits = nil
        let loop = ConsumerLoop(
            group: group,
            sink: NotificationSink(redis: redis, maxLength: configuration.notificationMaxLength),
            options: options, stop: stop, logger: logger
        )
        do {
            try loop.run()
        } catch {
            failure = error
            logger.error("notifier stopped", metadata: ["error": "\(error)"])
            stop.stop()
        }
        stats = loop.stats
    }

    func join() -> ConsumerStats {
        done.wait()
        return stats
    }
}

/// The notifier consumer over every slot stream of a cluster, on its own
/// thread, router and keyevent subscriptions.
private final class ClusterNotifierThread: @unchecked Sendable {
    private let configuration: ReplayRunner.Configuration
    private let seeds: [RedisEndpoint]
    private let timeout: TimeAmount
    private let stop: StopSignal
    private let logger: Logger
    private let done = DispatchSemaphore(value: 0)
    private var stats = ConsumerStats()
    private(set) var failure: Error?

    init(configuration: ReplayRunner.Configuration, seeds: [RedisEndpoint], timeout: TimeAmount, stop: StopSignal, logger: Logger) {
        self.configuration = configuration
        self.seeds = seeds
        self.timeout = timeout
        self.stop = stop
        self.logger = logger
    }

    func start() {
        let thread = Thread { self.main() }
        thread.name = "notifier"
        thread.start()
    }

    private func main() {
        defer { done.signal() }
        do {
            let ledger = try ClusterLedger(seeds: seeds, commandTimeout: timeout, logger: logger)
            defer { ledger.close() }
            var options = configuration.consumerOptions
            options.killAfterCommits = nil
            let consumer = ClusterConsumer(
                ledger: ledger, sink: ClusterNotificationSink(ledger: ledger, maxLength: configuration.notificationMaxLength),
                group: configuration.notifyGroup, consumer: configuration.consumer, options: options,
                sweepInterval: configuration.sweepIntervalSeconds, stop: stop, logger: logger
            )
            defer { stats = consumer.stats }
            try consumer.run()
        } catch {
            failure = error
            logger.error("notifier stopped", metadata: ["error": "\(error)"])
            stop.stop()
        }
    }

    func join() -> ConsumerStats {
        done.wait()
        return stats
    }
}
