import Foundation
import Ledger
import Logging
import NIOCore
import RedisWire

/// Where a consumer puts the entries it reads. `apply` must be durable when
/// it returns: the loop acknowledges the entries right after.
public protocol EntrySink: AnyObject {
    func apply(_ entries: [StreamEntry]) async throws -> BatchOutcome
}

/// What a sink did with each entry of a batch; the three add up to the batch.
public struct BatchOutcome: Sendable, Equatable {
    /// Newly applied.
    public var applied = 0
    /// Already applied before (re-delivered) and ignored.
    public var duplicates = 0
    /// Not applicable to this sink, or set aside as malformed.
    public var skipped = 0

    public init(applied: Int = 0, duplicates: Int = 0, skipped: Int = 0) {
        self.applied = applied
        self.duplicates = duplicates
        self.skipped = skipped
    }

    public var total: Int { applied + duplicates + skipped }

    static func += (lhs: inout BatchOutcome, rhs: BatchOutcome) {
        lhs.applied += rhs.applied
        lhs.duplicates += rhs.duplicates
        lhs.skipped += rhs.skipped
    }
}

public struct ConsumerOptions: Sendable {
    /// Entries per XREADGROUP / XAUTOCLAIM (and per database transaction).
    public var batchSize = 500
    /// How long one XREADGROUP waits for new entries; also bounds how long a
    /// stop (the consumer task's cancellation) waits.
    public var blockMilliseconds = 1_000
    /// Pending entries of another consumer idle this long are claimed.
    public var claimIdleMilliseconds = 30_000
    /// Stop once the group has nothing new and nothing pending.
    public var drain = false
    /// Consecutive Redis failures tolerated (with back-off) before giving up
    /// in drain mode; a long-running consumer retries for ever.
    public var maxDrainFailures = 20
    /// Testing only: SIGKILL this process after this many commits, before
    /// their XACK, to prove a restart re-applies nothing twice.
    public var killAfterCommits: Int?
    /// Apply a batch only once this many replicas hold it (nil: 1 on a
    /// cluster with replicas, 0 otherwise; 0: off).
    public var replicaAcks: Int?
    /// The most one WAIT of the replica fence takes.
    public var replicaAckTimeoutMilliseconds = 1_000

    /// The fence for `replicaAcks` or its default, nil when off.
    func fence(replicated: Bool) -> ReplicaFence? {
        let replicas = replicaAcks ?? (replicated ? 1 : 0)
        guard replicas > 0 else { return nil }
        return ReplicaFence(replicas: replicas, timeoutMilliseconds: replicaAckTimeoutMilliseconds)
    }

    public static let batchSizeRange = 1...10_000
    public static let blockRange = 10...30_000

    public init() {}

    /// The longest a single reply may take on this consumer's connection.
    public var commandTimeoutMilliseconds: Int { blockMilliseconds + 5_000 }
}

public struct ConsumerStats: Sendable, Equatable {
    public var batches = 0
    public var outcome = BatchOutcome()
    public var claimed = 0
}

/// Reads a consumer group and hands batches to a sink: apply (durably), then
/// XACK. On start it first re-reads what this consumer was delivered and never
/// acknowledged; every `claimIdleMilliseconds / 2` (and whenever a drain finds
/// nothing new) it claims entries other consumers left pending too long.
///
/// Stops when its task is cancelled, between batches: a batch read is
/// applied and acknowledged first (the stop waits for it), so a stop never
/// loses an entry nor applies one twice.
public final class ConsumerLoop {
    private let group: ConsumerGroup
    private let sink: EntrySink
    private let options: ConsumerOptions
    private let logger: Logger
    private let afterBatch: (ConsumerStats) async -> Void
    private let whenIdle: (ConsumerStats) async -> Void
    private(set) public var stats = ConsumerStats()
    private var lastClaim = Date.distantPast
    private var consecutiveFailures = 0
    /// Set after a Redis failure: a batch may have been applied but not
    /// acknowledged, so this consumer's pending entries are re-read first.
    private var mustRecoverOwnPending = true

    /// `afterBatch` runs after every acknowledged batch, `whenIdle` after a
    /// read that found nothing (housekeeping: progress, trimming).
    init(
        group: ConsumerGroup, sink: EntrySink, options: ConsumerOptions, logger: Logger,
        afterBatch: @escaping (ConsumerStats) async -> Void = { _ in }, whenIdle: @escaping (ConsumerStats) async -> Void = { _ in }
    ) {
        precondition(ConsumerOptions.batchSizeRange.contains(options.batchSize))
        precondition(ConsumerOptions.blockRange.contains(options.blockMilliseconds))
        self.group = group
        self.sink = sink
        self.options = options
        self.logger = logger
        self.afterBatch = afterBatch
        self.whenIdle = whenIdle
    }

    /// Runs until its task is cancelled or, with `drain`, until caught up.
    /// Redis failures are retried with back-off; sink failures (the
    /// database) end the loop.
    public func run() async throws {
        try await retryingRedis { try await self.group.createIfMissing() }
        try await retryingRedis { try await self.recoverOwnPending() }
        logger.info("consumer ready", metadata: ["group": "\(group.group)", "consumer": "\(group.consumer)"])
        while !Task.isCancelled {
            var caughtUp = false
            try await retryingRedis {
                if self.mustRecoverOwnPending { try await self.recoverOwnPending() }
                if Date().timeIntervalSince(self.lastClaim) * 1000 >= Double(self.options.claimIdleMilliseconds / 2) {
                    try await self.claimFromIdleConsumers()
                }
                let block = self.options.drain ? min(self.options.blockMilliseconds, 100) : self.options.blockMilliseconds
                let entries = try await self.group.readNew(count: self.options.batchSize, blockMilliseconds: block)
                if !entries.isEmpty {
                    try await self.handle(entries)
                    return
                }
                await self.whenIdle(self.stats)
                if self.options.drain {
                    // Nothing new: done once nobody holds unacknowledged entries;
                    // otherwise wait for them to be acked or to become claimable.
                    if try await self.group.pendingCount() == 0 {
                        caughtUp = true
                    } else {
                        try await self.claimFromIdleConsumers()
                    }
                }
            }
            if caughtUp { break }
        }
    }

    private func recoverOwnPending() async throws {
        var cursor = StreamID.zero
        while !Task.isCancelled {
            let entries = try await group.ownPending(after: cursor, count: options.batchSize)
            guard let last = entries.last else {
                mustRecoverOwnPending = false
                return
            }
            logger.info("re-applying entries delivered before a restart", metadata: ["count": "\(entries.count)"])
            try await handle(entries)
            cursor = last.id
        }
    }

    private func claimFromIdleConsumers() async throws {
        lastClaim = Date()
        var cursor = StreamID.zero
        repeat {
            let (next, entries) = try await group.claimIdle(
                minIdleMilliseconds: options.claimIdleMilliseconds, after: cursor, count: options.batchSize
            )
            if !entries.isEmpty {
                logger.info("claimed entries from an idle consumer", metadata: ["count": "\(entries.count)"])
                stats.claimed += entries.count
                try await handle(entries)
            }
            cursor = next
        } while cursor != .zero && !Task.isCancelled
    }

    /// Apply (commit), then acknowledge. A crash between the two re-delivers
    /// the batch, which the sink ignores by key.
    private func handle(_ entries: [StreamEntry]) async throws {
        if let fence = options.fence(replicated: false) {
            let replies = try await group.redis.pipeline(
                fence.commands(stream: group.stream, group: group.group, consumer: group.consumer, ids: entries.map(\.id))
            )
            try fence.check(waitReply: replies[1], stream: group.stream)
        }
        let outcome: BatchOutcome
        do {
            outcome = try await sink.apply(entries)
        } catch {
            throw SinkFailure(underlying: error)
        }
        precondition(outcome.total == entries.count, "the sink accounts for every entry of the batch")
        stats.batches += 1
        stats.outcome += outcome
        if let limit = options.killAfterCommits, stats.batches >= limit {
            logger.critical("killing myself after commit, before XACK (--kill-after-commits)")
            kill(getpid(), SIGKILL)
        }
        try await group.acknowledge(entries.map(\.id))
        logger.debug("batch committed and acknowledged", metadata: [
            "group": "\(group.group)", "entries": "\(entries.count)", "applied": "\(outcome.applied)",
            "duplicates": "\(outcome.duplicates)", "total_applied": "\(stats.outcome.applied)",
        ])
        await afterBatch(stats)
    }

    /// Runs `body`, retrying Redis failures with back-off (`Backoff.replayer`:
    /// 50 ms doubling to 2 s) until it succeeds or the task is cancelled. Sink failures pass through.
    private func retryingRedis(_ body: () async throws -> Void) async throws {
        var backoff = Backoff.replayer
        while true {
            do {
                try await body()
                consecutiveFailures = 0
                return
            } catch let error where !(error is SinkFailure) {
                // Anything but the sink is the Redis link (replies, connects, timeouts).
                consecutiveFailures += 1
                mustRecoverOwnPending = true
                if options.drain && consecutiveFailures >= options.maxDrainFailures { throw error }
                if Task.isCancelled {
                    // Whatever was in hand stays pending in Redis and is applied (once) after a restart.
                    logger.warning("stopping while redis fails", metadata: ["group": "\(group.group)", "error": "\(error)"])
                    return
                }
                let delay = backoff.failed()
                logger.warning("redis failed; retrying", metadata: ["group": "\(group.group)", "error": "\(error)", "retry_in_ms": "\(delay.nanoseconds / 1_000_000)"])
                // Cut short by a stop; the next failure (or success) then ends the wait.
                try? await Task.sleep(for: delay.duration)
            }
        }
    }
}

/// The sink failed (database error): the batch stays pending in Redis.
public struct SinkFailure: Error, CustomStringConvertible {
    public let underlying: Error
    public var description: String { "could not apply a batch: \(underlying)" }
}
