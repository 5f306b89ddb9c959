import NIOCore

public struct AuthorizerConfig: Sendable {
    /// The answer must reach the terminal within this time.
    public var sla: TimeAmount = .milliseconds(100)
    /// A contended request never gets less than this to wait for the lock.
    public var minLockBudget: TimeAmount = .milliseconds(10)
    /// Lifetime of `lock:{ID}` if its holder never releases it.
    public var lockTTL: TimeAmount = .milliseconds(200)
    /// How long a day bucket `txns:{ID}:YYYYMMDD` outlives its day: the
    /// reversal window plus a day, so that a reversal arriving after the
    /// window finds the record and is told `original not found` rather than
    /// leaving a tombstone.
    public var idempotencyTTLSeconds = 2 * 86_400
    /// Until this Unix time the scripts also read the older one-key records
    /// (`txn:{ID}:TXNID`): `idempotency:buckets-since` plus their 48 h life.
    /// 0: this Redis never held any.
    public var olderRecordsReadUntil: Int64 = 0
    /// A reversal is accepted this long after its original was decided.
    public var reversalWindowSeconds = 86_400
    /// A request whose script is still in flight this long before the SLA
    /// runs out is answered `07 timeout` (the margin covers the journal's fsync).
    public var answerMargin: TimeAmount = .milliseconds(20)
    /// Lock waits end this long earlier than the SLA minus the recent
    /// processing time, so that decline.lua's reply (the recorded `07 account
    /// busy`, or the id's first decision) is back before the answer is due.
    /// A decline still in flight at the last moment is answered `07 timeout`
    /// with a reversal owed, which costs a journal write: keep it rare.
    public var answerSlack: TimeAmount = .milliseconds(10)
    /// Most reversals the service may owe at once (the journal's bound).
    public var maxPendingReversals = 10_000
    /// Requests for one account queued inside one process; more are refused.
    public var maxQueuedPerAccount = 1_024

    /// Replicas that must acknowledge a decision's writes (WAIT) before its
    /// answer; 0: no wait.
    public var replicaAcks = 0
    /// The most one WAIT may take (the SLA still bounds the answer).
    public var replicaAckTimeout: TimeAmount = .milliseconds(50)
    /// A `07` that owes a reversal waits for its journal line's fsync however
    /// long it takes (past the SLA), instead of until the SLA's last moment.
    public var answerAfterJournalSync = false
    /// ISO 8583: a DE2 that names no card is taken as the account id (the
    /// behaviour before cards). Off: such a request is `07 unknown card` (DE39 14).
    public var isoPANAsAccount = false
    /// The zone of civil time for card expiry (and spending windows): its offset
    /// from UTC in seconds, now.
    public var zoneOffsetSeconds: @Sendable () -> Int = { 0 }

    public init() {}
}
