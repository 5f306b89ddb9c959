import Foundation
import Ledger
import Logging

/// The webhooks group's sink: each ledger entry that concerns the holder
/// becomes one event per endpoint that wants it, stored in the outbox in
/// one transaction (durable before the consumer acknowledges the entries),
/// then the endpoints' dispatchers are woken.
final class WebhookSink: EntrySink {
    private let outbox: WebhookOutbox
    private let configuration: WebhookConfiguration
    private let dispatchers: [String: WebhookDispatcher]
    private let metrics: WebhookMetrics
    private let logger: Logger
    private var lastFullWarning = Date.distantPast

    init(outbox: WebhookOutbox, configuration: WebhookConfiguration, dispatchers: [WebhookDispatcher], metrics: WebhookMetrics, logger: Logger) {
        self.outbox = outbox
        self.configuration = configuration
        self.dispatchers = Dictionary(uniqueKeysWithValues: dispatchers.map { ($0.name, $0) })
        self.metrics = metrics
        self.logger = logger
    }

    func apply(_ batches: [(stream: String, entries: [StreamEntry])]) async throws -> BatchOutcome {
        var events: [(endpoint: String, event: WebhookEvent)] = []
        var outcome = BatchOutcome()
        for (stream, entries) in batches {
            for entry in entries {
                guard let statement = try? Statement(entry: entry), let event = try WebhookEvent(statement: statement, stream: stream) else {
                    outcome.skipped += 1
                    continue
                }
                let wanted = configuration.endpoints.filter { $0.wants(event) }
                if wanted.isEmpty {
                    outcome.skipped += 1
                    continue
                }
                outcome.applied += 1
                events += wanted.map { ($0.name, event) }
            }
        }
        let stored = try await outbox.enqueue(events, now: WebhookDispatcher.now(), cap: configuration.maxStoredEvents)
        if stored.overflowed > 0 {
            metrics.overflow.increment(by: stored.overflowed)
            if Date().timeIntervalSince(lastFullWarning) >= 60 {
                lastFullWarning = Date()
                logger.error("webhooks retry store full: new events go straight to the dead letters (authorizer webhooks resend)", metadata: [
                    "cap": "\(configuration.maxStoredEvents)", "overflowed": "\(stored.overflowed)",
                ])
            }
        }
        for name in Set(events.map(\.endpoint)) { dispatchers[name]?.wake() }
        return outcome
    }
}
