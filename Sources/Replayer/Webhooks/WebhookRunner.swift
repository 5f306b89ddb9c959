import AsyncHTTPClient
import AuthorizerCore
import Foundation
import Ledger
import Logging
import NIOCore
import NIOPosix
import RedisWire

/// Everything `authorizer webhooks deliver` does: the `webhooks` consumer
/// group over every ledger stream (one Redis or a cluster's slot streams,
/// through the same `StreamConsumer` as the replayer) stores events in the
/// outbox and acknowledges them; one dispatcher per endpoint delivers them.
/// The ledger is never held back by an endpoint: an entry is acknowledged
/// as soon as its events are stored.
public final class WebhookRunner: Sendable {
    public struct Options: Sendable {
        public var target: RedisTarget
        public var databasePath: String
        public var consumer: String
        public var group = Keys.webhooksGroup
        public var consumerOptions = ConsumerOptions()
        public var sweepIntervalSeconds: TimeInterval = 5

        public init(target: RedisTarget, databasePath: String, consumer: String) {
            self.target = target
            self.databasePath = databasePath
            self.consumer = consumer
        }
    }

    private let options: Options
    private let configuration: WebhookConfiguration
    private let metrics: WebhookMetrics
    private let logger: Logger

    public init(options: Options, configuration: WebhookConfiguration, metrics: WebhookMetrics, logger: Logger) {
        self.options = options
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
    }

    /// Runs until its task is cancelled: the consumer finishes its batch in
    /// hand, deliveries in flight are abandoned (sent again next time).
    public func run() async throws {
        let outbox = try WebhookOutbox(path: options.databasePath)
        var httpConfiguration = HTTPClient.Configuration()
        httpConfiguration.httpVersion = .automatic
        httpConfiguration.timeout = .init(connect: .seconds(5), read: .seconds(60))
        httpConfiguration.connectionPool = .init(
            idleTimeout: .seconds(60),
            concurrentHTTP1ConnectionsPerHostSoftLimit: configuration.endpoints.map(\.maxInFlight).max() ?? 8
        )
        httpConfiguration.redirectConfiguration = .disallow
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: httpConfiguration)
        let dispatchers = configuration.endpoints.map {
            WebhookDispatcher(endpoint: $0, retry: configuration.retry, outbox: outbox, client: client, metrics: metrics, logger: logger)
        }
        metrics.storeCap.record(configuration.maxStoredEvents)
        let configured = Set(configuration.endpoints.map(\.name))
        for stranded in try outbox.status() where !configured.contains(stranded.endpoint) {
            logger.warning("the store holds events of an endpoint no longer configured; they count against the cap", metadata: [
                "endpoint": "\(stranded.endpoint)", "backlog": "\(stranded.backlog)", "dead_letters": "\(stranded.deadLetters)",
            ])
        }
        let ledger = LedgerClient(
            target: options.target, commandTimeout: .milliseconds(Int64(options.consumerOptions.commandTimeoutMilliseconds)), logger: logger
        )
        defer { ledger.close() }
        do {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await self.consume(ledger: ledger, outbox: outbox, dispatchers: dispatchers) }
                for dispatcher in dispatchers {
                    tasks.addTask { try await dispatcher.run() }
                }
                tasks.addTask { await self.sampleStore(outbox, lag: LedgerLagReader(redis: ledger.redis, group: self.options.group)) }
                // The first to end (cancelled, or failed) ends all.
                defer { tasks.cancelAll() }
                try await tasks.next()
                tasks.cancelAll()
                while try await tasks.next() != nil {}
            }
        } catch {
            try? await client.shutdown()
            throw error
        }
        try await client.shutdown()
    }

    /// The `webhooks` group over every ledger stream, storing events in the outbox.
    private func consume(ledger: LedgerClient, outbox: WebhookOutbox, dispatchers: [WebhookDispatcher]) async throws {
        let consumer = StreamConsumer(
            ledger: ledger,
            sink: WebhookSink(outbox: outbox, configuration: configuration, dispatchers: dispatchers, metrics: metrics, logger: logger),
            group: options.group, consumer: options.consumer, options: options.consumerOptions,
            sweepInterval: options.sweepIntervalSeconds, logger: logger
        )
        try await consumer.run()
    }

    /// Every 5 s: the retry store's size and the dead letters per endpoint
    /// (`webhooks resend` changes both from another process), and the
    /// group's lag on the ledger.
    private func sampleStore(_ outbox: WebhookOutbox, lag: LedgerLagReader) async {
        while !Task.isCancelled {
            if let reading = try? await lag.read().get() {
                metrics.ledgerLag.record(reading.unapplied.map(Double.init) ?? .nan)
                metrics.ledgerLagSeconds.record(reading.oldestUnappliedSeconds ?? .nan)
            } else {
                metrics.ledgerLag.record(Double.nan)
                metrics.ledgerLagSeconds.record(Double.nan)
            }
            do {
                metrics.storeEvents.record(try outbox.size())
                let dead = try outbox.deadLetterCounts()
                for endpoint in configuration.endpoints {
                    metrics.endpoint(endpoint.name).deadLetters.record(dead[endpoint.name] ?? 0)
                }
            } catch {
                logger.warning("cannot read the webhooks store's size", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: .seconds(5))
        }
    }
}
