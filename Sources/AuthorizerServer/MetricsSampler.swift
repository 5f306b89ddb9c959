import AuthorizerCore
import Ledger
import Logging
import NIOConcurrencyHelpers
import NIOCore
import RedisWire

/// Sets, once per interval and off the request path, the gauges that are
/// cheaper to sample than to track: account contention in the shards and the
/// state of the statements stream. A sample starts only after the previous
/// one finished, so a slow Redis never piles samples up.
public final class MetricsSampler: Sendable {
    private let task: RepeatedTask

    private init(task: RepeatedTask) {
        self.task = task
    }

    public static func start(
        authorizer: Authorizer,
        redis: RedisClient,
        metrics: ServerMetrics,
        interval: TimeAmount = .seconds(1),
        readMemory: (@Sendable () -> EventLoopFuture<RedisMemory>)? = nil,
        logger: Logger
    ) -> MetricsSampler {
        let loop = redis.eventLoop
        let failing = NIOLockedValueBox(false)
        let task = loop.scheduleRepeatedAsyncTask(initialDelay: .zero, delay: interval) { _ in
            let contention = authorizer.contention().hop(to: loop).map { metrics.contention(accounts: $0.accounts, waiters: $0.waiters) }
            let memory = readMemory.map { read in read().hop(to: loop).map { metrics.redisMemory($0, logger: logger) } }
                ?? loop.makeSucceededVoidFuture()
            // The lag gauges are set by serve's lag monitor, at its own pace.
            return contention.and(memory).map { _ in
                if failing.withLockedValue({ $0 }) {
                    failing.withLockedValue { $0 = false }
                    logger.info("metrics sampling recovered")
                }
            }.recover { error in
                let first = failing.withLockedValue { state -> Bool in
                    defer { state = true }
                    return !state
                }
                if first { logger.warning("metrics sampling failed; gauges keep their last values", metadata: ["error": "\(error)"]) }
            }
        }
        return MetricsSampler(task: task)
    }

    public func stop() {
        task.cancel()
    }
}
