import Foundation
import Metrics

/// The deliverer's metrics, per endpoint, made through a factory (the
/// command gives it a Prometheus registry's).
public final class WebhookMetrics: Sendable {
    public enum Name {
        public static let deliveries = "authorizer_webhook_deliveries_total"
        public static let latency = "authorizer_webhook_delivery_latency_seconds"
        public static let backlog = "authorizer_webhook_backlog_events"
        public static let oldest = "authorizer_webhook_oldest_undelivered_seconds"
        public static let deadLetters = "authorizer_webhook_dead_letters"
        public static let storeEvents = "authorizer_webhook_retry_store_events"
        public static let storeCap = "authorizer_webhook_retry_store_cap"
        public static let overflow = "authorizer_webhook_retry_store_overflow_total"
        public static let ledgerLag = "authorizer_webhook_ledger_lag_entries"
        public static let ledgerLagSeconds = "authorizer_webhook_ledger_lag_seconds"

        public static let help: [String: String] = [
            deliveries: "Delivery attempts by endpoint and outcome: delivered (2xx), failed (retried later), dead (failed past the age limit: a dead letter).",
            latency: "Time from the ledger entry to its event's 2xx, by endpoint.",
            backlog: "Events stored for an endpoint and not delivered yet.",
            oldest: "Age of the oldest undelivered event of an endpoint (since it was stored); 0 when none.",
            deadLetters: "Events given up on for an endpoint (`authorizer webhooks resend` sends them again).",
            storeEvents: "Events in the retry store (the outbox), every endpoint together.",
            storeCap: "The retry store's cap; past it new events become dead letters. Alert at 0.8 of it.",
            overflow: "Events stored as dead letters at once because the retry store was full.",
            ledgerLag: "Ledger entries the webhooks group has not stored in the outbox yet (read and unread); NaN when unknown. While it grows the replayer cannot trim them.",
            ledgerLagSeconds: "Age of the oldest ledger entry the webhooks group has not stored yet; 0 when none, NaN when unknown.",
        ]

        /// Decision-to-delivery: tens of ms normally, minutes to days while an endpoint is down.
        public static let latencyBuckets: [Duration] = [
            .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
            .milliseconds(500), .seconds(1), .seconds(5), .seconds(30), .seconds(300), .seconds(3_600), .seconds(86_400),
        ]
    }

    struct PerEndpoint: Sendable {
        let delivered: Counter
        let failed: Counter
        let dead: Counter
        let latency: Timer
        let backlog: Gauge
        let oldest: Gauge
        let deadLetters: Gauge
    }

    private let endpoints: [String: PerEndpoint]
    let storeEvents: Gauge
    let storeCap: Gauge
    let overflow: Counter
    let ledgerLag: Gauge
    let ledgerLagSeconds: Gauge

    public init(endpoints names: [String], factory: MetricsFactory) {
        endpoints = Dictionary(uniqueKeysWithValues: names.map { name in
            let dimension = [("endpoint", name)]
            return (name, PerEndpoint(
                delivered: Counter(label: Name.deliveries, dimensions: dimension + [("outcome", "delivered")], factory: factory),
                failed: Counter(label: Name.deliveries, dimensions: dimension + [("outcome", "failed")], factory: factory),
                dead: Counter(label: Name.deliveries, dimensions: dimension + [("outcome", "dead")], factory: factory),
                latency: Timer(label: Name.latency, dimensions: dimension, factory: factory),
                backlog: Gauge(label: Name.backlog, dimensions: dimension, factory: factory),
                oldest: Gauge(label: Name.oldest, dimensions: dimension, factory: factory),
                deadLetters: Gauge(label: Name.deadLetters, dimensions: dimension, factory: factory)
            ))
        })
        storeEvents = Gauge(label: Name.storeEvents, factory: factory)
        storeCap = Gauge(label: Name.storeCap, factory: factory)
        overflow = Counter(label: Name.overflow, factory: factory)
        ledgerLag = Gauge(label: Name.ledgerLag, factory: factory)
        ledgerLagSeconds = Gauge(label: Name.ledgerLagSeconds, factory: factory)
    }

    /// Metrics that record nothing.
    public static func disabled(endpoints: [String]) -> WebhookMetrics {
        WebhookMetrics(endpoints: endpoints, factory: NOOPMetricsHandler.instance)
    }

    func endpoint(_ name: String) -> PerEndpoint {
        guard let metrics = endpoints[name] else { preconditionFailure("metrics for every configured endpoint") }
        return metrics
    }
}
