import ArgumentParser
import AuthorizerServer
import Foundation
import Logging
import NIOPosix
import Prometheus
import Replayer
import ServiceLifecycle

struct WebhooksCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webhooks",
        abstract: "Signed webhooks to the holders' app backends: deliver, status, resend.",
        subcommands: [WebhooksDeliver.self, WebhooksStatus.self, WebhooksResend.self]
    )
}

struct WebhooksDeliver: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deliver",
        abstract: "Deliver one signed event per holder-facing ledger entry to the configured endpoints.",
        discussion: """
            Reads every ledger stream with the consumer group `webhooks`, stores each batch's events in the \
            outbox (--db, SQLite) and acknowledges the entries: the ledger never waits for an endpoint. Each \
            endpoint gets its events in ledger order per account, at least once, signed (Authorizer-Signature), \
            retried with back-off and jitter up to the age limit, then kept as dead letters. Run one deliverer \
            per ledger (per-account order needs one consumer). SIGINT/SIGTERM: finishes the batch in hand, \
            deliveries in flight are sent again at the next start.
            """
    )

    /// Default: AUTHORIZER_WEBHOOKS_REDIS_URL (the `webhooks` user: it may consume the streams, not trim or write them), then AUTHORIZER_REDIS_URL.
    @OptionGroup var redisOptions: RedisOptions
    @OptionGroup var logOptions: LogOptions

    @Option(help: "The webhooks configuration (YAML: endpoints, retry, store).")
    var config = "webhooks.yaml"

    @Option(help: "The outbox and dead letters (SQLite, created when missing).")
    var db = "webhooks.sqlite"

    @Option(help: "This consumer's name in the group: the same across restarts, so a restarted deliverer re-reads what it was delivered and never stored, before anything newer.")
    var consumer = "deliverer"

    @Option(help: "Entries per read and per outbox transaction (1-10000).")
    var batch = 500

    @Option(help: "After a wake-up, wait this long (ms) before reading the ledger, so that one outbox transaction stores the events of several decisions (0-1000): a little latency for much less CPU per event.")
    var lingerMs = 20

    @Option(help: "How often every master is swept for ledger streams, in ms (the safety net under the xadd keyevents).")
    var sweepMs = 5_000

    @Option(help: "Store a batch's events only once this many replicas hold its entries (as `replay --replica-acks`). Default: 1 on a Redis Cluster with replicas, 0 otherwise.")
    var replicaAcks: Int?

    @Option(help: "Serve Prometheus metrics at http://<metrics-host>:<port>/metrics (0 picks a free port). Off when absent.")
    var metricsPort: Int?

    @Option(help: "Address the metrics endpoint listens on.")
    var metricsHost = "127.0.0.1"

    func validate() throws {
        guard ConsumerOptions.batchSizeRange.contains(batch) else { throw ValidationError("--batch must be 1-10000") }
        guard (100...600_000).contains(sweepMs) else { throw ValidationError("--sweep-ms must be 100-600000") }
        guard (0...1_000).contains(lingerMs) else { throw ValidationError("--linger-ms must be 0-1000") }
        guard (0...16).contains(replicaAcks ?? 0) else { throw ValidationError("--replica-acks must be 0-16") }
        guard (1...200).contains(consumer.count) else { throw ValidationError("--consumer must be 1-200 characters") }
        guard metricsPort.map({ (0...65_535).contains($0) }) ?? true else { throw ValidationError("--metrics-port must be 0-65535") }
    }

    func run() async throws {
        logOptions.bootstrap()
        let logger = Logger(label: "authorizer.webhooks")
        let configuration: WebhookConfiguration
        do {
            configuration = try WebhookConfiguration(path: config)
        } catch let error as WebhookConfiguration.Invalid {
            throw fail("\(config): \(error)")
        }
        let target = try await ledgerTarget(redisOptions, roleVariable: "AUTHORIZER_WEBHOOKS_REDIS_URL")
        var options = WebhookRunner.Options(target: target, databasePath: db, consumer: consumer)
        options.consumerOptions.batchSize = batch
        options.consumerOptions.lingerMilliseconds = lingerMs
        options.consumerOptions.replicaAcks = replicaAcks
        options.sweepIntervalSeconds = Double(sweepMs) / 1000
        let names = configuration.endpoints.map(\.name)
        let registry = PrometheusCollectorRegistry()
        var metrics = WebhookMetrics.disabled(endpoints: names)
        var server: MetricsServer?
        if let metricsPort {
            var factory = PrometheusMetricsFactory(registry: registry)
            factory.durationHistogramBuckets = [WebhookMetrics.Name.latency: WebhookMetrics.Name.latencyBuckets]
            metrics = WebhookMetrics(endpoints: names, factory: factory)
            var serverOptions = MetricsServer.Options()
            serverOptions.port = metricsPort
            serverOptions.host = metricsHost
            let started = try await MetricsServer.start(
                group: MultiThreadedEventLoopGroup.singleton,
                exposition: { PrometheusText.annotated(registry.emitToBuffer(), help: WebhookMetrics.Name.help) },
                options: serverOptions, logger: logger
            ).get()
            server = started
            logger.info("metrics listening", metadata: ["port": "\(started.localPort ?? metricsPort)", "path": "/metrics"])
        }
        logger.info("delivering webhooks", metadata: [
            "redis": "\(target.primary)", "db": "\(db)", "consumer": "\(options.consumer)",
            "endpoints": "\(names.joined(separator: ","))", "max_age_s": "\(configuration.retry.maxAgeSeconds)",
        ])
        let runner = WebhookRunner(options: options, configuration: configuration, metrics: metrics, logger: logger)
        let services = ServiceGroup(configuration: .init(
            services: [.init(service: WebhooksService(runner: runner, logger: logger))],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        try await services.run()
        try? await server?.close().get()
        logger.info("webhooks stopped")
    }
}

struct WebhooksService: Service {
    let runner: WebhookRunner
    let logger: Logger

    func run() async throws {
        let runner = self.runner
        try await withGracefulShutdownHandler {
            try await cancelWhenGracefulShutdown { try await runner.run() }
        } onGracefulShutdown: {
            logger.info("stopping: finishing the batch in hand")
        }
    }
}

/// The deliverer's existing store; a clear error when there is none.
private func openStore(_ path: String) throws -> WebhookOutbox {
    do {
        return try WebhookOutbox(path: path, create: false)
    } catch let error as WebhookConfiguration.Invalid {
        throw fail("\(error)")
    }
}

struct WebhooksStatus: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Backlog, oldest undelivered event and dead letters per endpoint."
    )

    @Option(help: "The deliverer's store (SQLite).")
    var db = "webhooks.sqlite"

    func run() throws {
        let outbox = try openStore(db)
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        func age(_ milliseconds: Int64?) -> String {
            guard let milliseconds else { return "-" }
            let seconds = max(0, now - milliseconds) / 1000
            return seconds < 120 ? "\(seconds)s" : seconds < 7_200 ? "\(seconds / 60)m" : "\(seconds / 3_600)h"
        }
        let rows = try outbox.status()
        print("endpoint".padding(toLength: 24, withPad: " ", startingAt: 0) + "backlog  oldest  dead-letters  oldest-dead")
        for row in rows {
            print(
                row.endpoint.padding(toLength: 24, withPad: " ", startingAt: 0)
                    + String(row.backlog).padding(toLength: 9, withPad: " ", startingAt: 0)
                    + age(row.oldestUndeliveredMilliseconds).padding(toLength: 8, withPad: " ", startingAt: 0)
                    + String(row.deadLetters).padding(toLength: 14, withPad: " ", startingAt: 0)
                    + age(row.oldestDeadMilliseconds)
            )
        }
        if rows.isEmpty { print("(nothing stored: every event delivered)") }
        print("retry store: \(try outbox.size()) events")
    }
}

struct WebhooksResend: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resend",
        abstract: "Put dead letters back in the outbox; the running deliverer sends them within a second.",
        discussion: "Select by event id, account, or ledger time range (ISO 8601 or ms since the epoch); --all for every dead letter."
    )

    @Option(help: "The deliverer's store (SQLite).")
    var db = "webhooks.sqlite"

    @Option(help: "Only this endpoint's dead letters.")
    var endpoint: String?

    @Option(help: "One event, by its event_id.")
    var event: String?

    @Option(help: "Every dead letter of this account.")
    var account: String?

    @Option(help: "Dead letters of ledger entries from this time (ISO 8601, or ms since the epoch).")
    var since: String?

    @Option(help: "Dead letters of ledger entries up to this time (ISO 8601, or ms since the epoch).")
    var until: String?

    @Flag(help: "Every dead letter (of --endpoint, if given).")
    var all = false

    func validate() throws {
        guard all || event != nil || account != nil || since != nil || until != nil else {
            throw ValidationError("say which dead letters: --event, --account, --since/--until, or --all")
        }
        for (name, value) in [("--since", since), ("--until", until)] {
            if let value, Self.milliseconds(value) == nil { throw ValidationError("\(name): ISO 8601 (2026-12-07T10:00:00Z) or ms since the epoch") }
        }
    }

    static func milliseconds(_ text: String) -> Int64? {
        if let value = Int64(text), value >= 0 { return value }
        let formatter = ISO8601DateFormatter()
        if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970 * 1000) }
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.date(from: text).map { Int64($0.timeIntervalSince1970 * 1000) }
    }

    func run() throws {
        let outbox = try openStore(db)
        var selection = WebhookOutbox.Selection()
        selection.endpoint = endpoint
        selection.eventID = event
        selection.account = account
        selection.sinceMilliseconds = since.flatMap(Self.milliseconds)
        selection.untilMilliseconds = until.flatMap(Self.milliseconds)
        let moved = try outbox.resend(selection, now: Int64(Date().timeIntervalSince1970 * 1000))
        print("\(moved) dead letter\(moved == 1 ? "" : "s") back in the outbox")
    }
}
