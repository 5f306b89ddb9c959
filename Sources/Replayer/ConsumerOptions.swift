import Foundation
import Ledger
import Logging
import NIOCore
import RedisWire

/// Where a consumer puts the entries it reads, a batch of one or several
/// streams at once. `apply` must be durable when it returns: the consumer
/// acknowledges the entries right after.
protocol EntrySink: AnyObject {
    func apply(_ batches: [(stream: String, entries: [StreamEntry])]) async throws -> BatchOutcome
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
    /// How long an idle consumer waits for a keyevent before it looks again.
    public var blockMilliseconds = 1_000
    /// Pending entries of another consumer idle this long are claimed.
    public var claimIdleMilliseconds = 30_000
    /// After a wake-up, wait this long before reading, so that one round
    /// (one sink transaction) takes the entries of several decisions.
    public var lingerMilliseconds = 0
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

/// The sink failed (database error): the batch stays pending in Redis.
public struct SinkFailure: Error, CustomStringConvertible {
    public let underlying: Error
    public var description: String { "could not apply a batch: \(underlying)" }
}
