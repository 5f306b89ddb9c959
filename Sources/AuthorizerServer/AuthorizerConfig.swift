import NIOCore

public struct AuthorizerConfig: Sendable {
    /// The answer must reach the terminal within this time.
    public var sla: TimeAmount = .milliseconds(100)
    /// A contended request never gets less than this to wait for the lock.
    public var minLockBudget: TimeAmount = .milliseconds(10)
    /// Lifetime of `lock:{ID}` if its holder never releases it.
    public var lockTTL: TimeAmount = .milliseconds(200)
    /// How long `txn:{ID}:TXNID` remembers a decision.
    public var idempotencyTTLSeconds = 86_400
    /// Requests for one account queued inside one process; more are refused.
    public var maxQueuedPerAccount = 1_024

    public init() {}
}
