import AuthorizerServer
import Logging
import NIOCore
import RedisWire
import ServiceLifecycle

// `serve` as a ServiceGroup: SIGTERM/SIGINT start a graceful shutdown, which
// the group hands to the services in reverse order, each finishing before
// the next is told. The order of `serve`'s list is therefore the order of
// start-up: Redis side, metrics, listeners; and the stop runs the other way.

/// The terminal (and ISO 8583) listeners. On shutdown: close them at once,
/// answer every request already read, then give the reversals owed a
/// bounded moment to reach Redis (what is left stays in the journal).
struct ListenerService: Service {
    let terminals: Listener
    let iso8583: Listener?
    let journal: ReversalJournal
    let logger: Logger
    /// Says the service listens (the group handles the stop signals by now).
    let announce: @Sendable () throws -> Void
    /// How long a stop waits for the reversals owed.
    static let owedReversalsWait: Duration = .seconds(5)

    func run() async throws {
        try announce()
        try? await gracefulShutdown()
        logger.info("shutting down: no new connections, answering requests in flight")
        let isoStopped = iso8583?.shutdown()
        try? await terminals.shutdown().get()
        try? await isoStopped?.get()
        let deadline = ContinuousClock.now + Self.owedReversalsWait
        while journal.count > 0 && ContinuousClock.now < deadline {
            // Not cancellable on purpose: the wait is already bounded.
            try? await Task.sleep(for: .milliseconds(10))
        }
        if journal.count > 0 {
            logger.warning("reversals still owed at stop; they stay in the journal for the next start", metadata: ["count": "\(journal.count)", "journal": "\(journal.path)"])
        }
    }
}

/// `/metrics`, its sampler and the replayer lag watch; stopped after the listeners.
struct MetricsService: Service {
    let server: MetricsServer?
    let sampler: MetricsSampler?
    let lagWatch: RepeatedTask?

    func run() async throws {
        try? await gracefulShutdown()
        lagWatch?.cancel()
        sampler?.stop()
        try? await server?.close().get()
    }
}

/// Rules, lock waits, the authorizer's Redis connections: the last to stop,
/// once nothing can send a request any more.
struct RedisSideService: Service {
    let rules: RulesCache
    let watcher: LockWatcher
    let authorizer: Authorizer
    let adminRouter: Redis
    let admin: RedisClient

    func run() async throws {
        try? await gracefulShutdown()
        rules.stop()
        watcher.close()
        try? await authorizer.shutdown().get()
        adminRouter.close()
        admin.close()
    }
}
