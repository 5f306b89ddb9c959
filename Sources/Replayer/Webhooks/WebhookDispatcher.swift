import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// Delivers one endpoint's stored events: reads the outbox in seq order
/// into a `DeliveryQueue`, POSTs what it says is due (signed, at most
/// `maxInFlight` accounts at once, one event per account at a time), and
/// records the outcomes in the outbox in batches.
///
/// One loop owns the queue; it wakes on a new batch stored (`wake()`), a
/// delivery finished, and a 100 ms tick (retries falling due; every second,
/// events `webhooks resend` put back). A crash re-sends what was in flight
/// or delivered and not yet recorded: at least once, same event ids.
final class WebhookDispatcher: @unchecked Sendable {
    private enum Signal: Sendable {
        case wake
        case tick
        case finished(DeliveryQueue.Item, DeliveryQueue.Outcome, createdMilliseconds: Int64?)
    }

    private let endpoint: WebhookConfiguration.Endpoint
    private let outbox: WebhookOutbox
    private let client: HTTPClient
    private let metrics: WebhookMetrics.PerEndpoint
    private let logger: Logger
    private let keys: [SymmetricKey]
    private let signals: AsyncStream<Signal>
    private let continuation: AsyncStream<Signal>.Continuation
    /// Owned by `run()`.
    private var queue: DeliveryQueue
    /// Messages read with their rows, kept until delivered or buried while
    /// they fit `cacheBytes` (past it, each is read again when it is sent).
    private var messages: [Int64: WebhookOutbox.Message] = [:]
    private var cachedBytes = 0
    static let cacheBytes = 64 * 1_024 * 1_024
    private var delivered: [Int64] = []
    /// Events past the age limit not yet moved to the dead letters.
    private var burials: [(seq: Int64, attempts: Int, error: String)] = []
    private var failed: [(seq: Int64, attempts: Int, nextAttempt: Int64, error: String)] = []

    static let tick = Duration.milliseconds(100)
    /// Outcomes recorded in one transaction at most; fewer at each tick.
    static let recordBatch = 256
    /// Stored events read into the queue per outbox query.
    static let readPage = 10_000

    init(endpoint: WebhookConfiguration.Endpoint, retry: WebhookConfiguration.Retry, outbox: WebhookOutbox, client: HTTPClient, metrics: WebhookMetrics, logger: Logger) {
        self.endpoint = endpoint
        self.outbox = outbox
        self.client = client
        self.metrics = metrics.endpoint(endpoint.name)
        keys = endpoint.keys
        var logger = logger
        logger[metadataKey: "endpoint"] = "\(endpoint.name)"
        self.logger = logger
        queue = DeliveryQueue(maxInFlight: endpoint.maxInFlight, retry: retry)
        // Wakes coalesce; outcomes are never dropped while the loop runs
        // (at most maxInFlight of them are outstanding).
        let (signals, continuation) = AsyncStream.makeStream(of: Signal.self, bufferingPolicy: .unbounded)
        self.signals = signals
        self.continuation = continuation
    }

    /// New events were stored for this endpoint.
    func wake() {
        continuation.yield(.wake)
    }

    var name: String { endpoint.name }

    /// Runs until the task is cancelled; what is in flight then is sent again next time.
    func run() async throws {
        try await readOutbox()
        await withTaskGroup(of: Void.self) { tasks in
            tasks.addTask { [continuation] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: Self.tick)
                    continuation.yield(.tick)
                }
            }
            var ticks = 0
            var wokenSinceRead = false
            for await signal in signals {
                if Task.isCancelled { break }
                switch signal {
                case .wake:
                    wokenSinceRead = true
                case .tick:
                    ticks += 1
                    if ticks % 10 == 0 {
                        wokenSinceRead = true
                        updateGauges()
                    }
                    await recordOutcomes()
                    await buryPending(now: Self.now())
                case .finished(let item, let outcome, let created):
                    await finished(item, outcome, createdMilliseconds: created)
                }
                if wokenSinceRead {
                    wokenSinceRead = false
                    do {
                        try await readOutbox()
                    } catch {
                        logger.warning("cannot read the webhooks outbox", metadata: ["error": "\(error)"])
                    }
                }
                if delivered.count + failed.count >= Self.recordBatch { await recordOutcomes() }
                for item in queue.take(now: Self.now()) {
                    let cached = messages[item.seq]
                    tasks.addTask { [continuation] in
                        let (outcome, created) = await self.deliver(item, cached: cached)
                        continuation.yield(.finished(item, outcome, createdMilliseconds: created))
                    }
                }
            }
            tasks.cancelAll()
        }
        await recordOutcomes()
        await buryPending(now: Self.now())
    }

    /// Adds the events stored after the last one read.
    private func readOutbox() async throws {
        while true {
            let page = try await outbox.stored(endpoint: endpoint.name, after: queue.lastSeq, limit: Self.readPage)
            for stored in page {
                if cachedBytes + stored.message.body.count <= Self.cacheBytes {
                    messages[stored.seq] = stored.message
                    cachedBytes += stored.message.body.count
                }
                queue.add(DeliveryQueue.Item(
                    seq: stored.seq, account: stored.account, attempts: stored.attempts,
                    enqueuedMilliseconds: stored.enqueuedMilliseconds, dueMilliseconds: stored.nextAttemptMilliseconds
                ))
            }
            if page.count < Self.readPage { return }
        }
    }

    private func finished(_ item: DeliveryQueue.Item, _ outcome: DeliveryQueue.Outcome, createdMilliseconds: Int64?) async {
        let now = Self.now()
        let action = queue.finished(account: item.account, outcome: outcome, now: now, random: { Int64.random(in: $0) })
        if case .reschedule = action {} else if let message = messages.removeValue(forKey: item.seq) {
            cachedBytes -= message.body.count
        }
        switch action {
        case .forget(let done):
            delivered.append(done.seq)
            metrics.delivered.increment()
            if let createdMilliseconds { metrics.latency.recordMilliseconds(max(0, now - createdMilliseconds)) }
        case .reschedule(let again, let error):
            failed.append((again.seq, again.attempts, again.dueMilliseconds, error))
            metrics.failed.increment()
            logger.debug("delivery failed; retrying later", metadata: [
                "account": "\(again.account)", "attempts": "\(again.attempts)", "retry_in_ms": "\(again.dueMilliseconds - now)", "error": "\(error)",
            ])
        case .bury(let dead, let error):
            metrics.dead.increment()
            logger.error("event given up on after the age limit: a dead letter (authorizer webhooks resend)", metadata: [
                "account": "\(dead.account)", "attempts": "\(dead.attempts)", "error": "\(error)",
            ])
            // Its earlier outcomes first: the dead letter must not be re-created by a late update.
            await recordOutcomes()
            burials.append((dead.seq, dead.attempts, error))
            await buryPending(now: now)
        }
    }

    /// Moves the buried events to the dead letters; one that cannot be moved
    /// now (a store error) is tried again at the next tick, never forgotten
    /// in the outbox until a restart.
    private func buryPending(now: Int64) async {
        while let burial = burials.first {
            do {
                try await outbox.bury(seq: burial.seq, attempts: burial.attempts, error: burial.error, now: now)
                burials.removeFirst()
            } catch {
                logger.error("cannot move an event to the dead letters yet; retrying at the next tick", metadata: [
                    "error": "\(error)", "waiting": "\(burials.count)",
                ])
                return
            }
        }
    }

    private func recordOutcomes() async {
        guard !delivered.isEmpty || !failed.isEmpty else { return }
        let (done, retried) = (delivered, failed)
        delivered.removeAll(keepingCapacity: true)
        failed.removeAll(keepingCapacity: true)
        do {
            try await outbox.record(delivered: done, failed: retried)
        } catch {
            // Not recorded: sent again after a restart (at least once).
            logger.warning("cannot record delivery outcomes in the outbox", metadata: ["error": "\(error)", "count": "\(done.count + retried.count)"])
        }
    }

    /// Once a second: the oldest event is a walk over the accounts with a backlog.
    private func updateGauges() {
        metrics.backlog.record(queue.count)
        let oldest = queue.oldestEnqueued
        metrics.oldest.record(Double(oldest.map { max(0, Self.now() - $0) } ?? 0) / 1000)
    }

    /// One POST of one stored event.
    private func deliver(_ item: DeliveryQueue.Item, cached: WebhookOutbox.Message?) async -> (DeliveryQueue.Outcome, Int64?) {
        let message: WebhookOutbox.Message
        if let cached {
            message = cached
        } else {
            do {
                guard let stored = try await outbox.message(seq: item.seq) else { return (.delivered, nil) }
                message = stored
            } catch {
                return (.failed("outbox: \(error)"), nil)
            }
        }
        var request = HTTPClientRequest(url: endpoint.url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "User-Agent", value: "authorizer-webhooks/1")
        request.headers.add(name: WebhookSignature.eventHeaderName, value: message.eventID)
        request.headers.add(name: WebhookSignature.headerName, value: WebhookSignature.header(
            body: message.body, timestamp: Self.now() / 1000, secrets: keys
        ))
        request.body = .bytes(ByteBuffer(bytes: message.body))
        do {
            let response = try await client.execute(request, timeout: .milliseconds(Int64(endpoint.timeoutMilliseconds)))
            // Read (and drop) a bounded answer so the connection can be reused.
            _ = try? await response.body.collect(upTo: 64 * 1024)
            guard (200..<300).contains(response.status.code) else { return (.failed("HTTP \(response.status.code)"), message.createdMilliseconds) }
            return (.delivered, message.createdMilliseconds)
        } catch {
            return (.failed("\(error)"), message.createdMilliseconds)
        }
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
}
