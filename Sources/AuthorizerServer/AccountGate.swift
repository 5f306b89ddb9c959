import AuthorizerCore
#if canImport(Glibc)
import Glibc
#endif
import Ledger
import Logging
import NIOCore
import RedisWire

/// The accounts owned by one event loop: their local FIFO gates, their lock
/// waits, and the Redis connection their scripts run on.
///
/// Every request for an account goes to the same shard, so inside one
/// process only the head of an account's queue talks to Redis, and its
/// unlock and the next head's authorize travel in order on one connection.
final class AccountGate: Sendable {
    let eventLoop: EventLoop
    let redis: Redis
    /// Which ledger stream records each account.
    private let ledger: LedgerLayout
    let scripts: ScriptLibrary
    private let watcher: LockWatcher
    let config: AuthorizerConfig
    let logger: Logger
    let metrics: ServerMetrics
    private let tokenPrefix: String
    private let lockTTLms: Int64
    private let state: NIOLoopBoundBox<State>
    /// Where a timed-out authorization's reversal is recorded before its `07 timeout`.
    private let journal: ReversalJournal?
    /// Applies a reversal the service owes (set by the Authorizer).
    private let owe: @Sendable (PendingReversal) -> Void

    private struct State {
        var queues: [String: CircularBuffer<Job>] = [:]
        /// Recent time from script call to decision, uncontended (EWMA, ns).
        var averageProcessingNanos: Double = 1_000_000
        var tokenCounter: UInt64 = 0
        /// Account locks this process holds between two of its requests for
        /// the account (account -> token): the next request inherits the lock.
        var heldLocks: [String: String] = [:]
        /// The day buckets to name, kept while the day (and the older records' reading) lasts.
        var idempotency: IdempotencyScope?
    }

    init(
        eventLoop: EventLoop, redis: Redis, scripts: ScriptLibrary, watcher: LockWatcher, config: AuthorizerConfig,
        tokenPrefix: String, logger: Logger, metrics: ServerMetrics = .disabled,
        journal: ReversalJournal? = nil, owe: @escaping @Sendable (PendingReversal) -> Void = { _ in }
    ) {
        self.journal = journal
        self.owe = owe
        self.eventLoop = eventLoop
        self.metrics = metrics
        self.redis = redis
        self.ledger = redis.target.ledger
        self.scripts = scripts
        self.watcher = watcher
        self.config = config
        self.tokenPrefix = tokenPrefix
        self.lockTTLms = config.lockTTL.nanoseconds / 1_000_000
        self.logger = logger
        self.state = NIOLoopBoundBox.makeBoxSendingValue(State(), eventLoop: eventLoop)
    }

    /// One authorization; completes on this shard's event loop, within the SLA.
    func authorize(_ request: TransactionRequest, _ resolution: Resolution, receivedAt: NIODeadline) -> EventLoopFuture<Decision> {
        submit(.authorize(request, resolution), receivedAt: receivedAt, answerBy: receivedAt + config.sla)
    }

    /// A terminal's reversal; completes on this shard's event loop, within the SLA.
    func reverse(_ request: ReversalRequest, receivedAt: NIODeadline) -> EventLoopFuture<Decision> {
        submit(.reverse(request, service: false), receivedAt: receivedAt, answerBy: receivedAt + config.sla)
    }

    /// A reversal the service owes; no terminal waits for it, so no answer
    /// deadline. A `07` (busy, storage unavailable) means "try again later".
    func reverseOwed(_ entry: PendingReversal) -> EventLoopFuture<Decision> {
        var request = ReversalRequest(id: entry.reversalID, account: entry.account, original: entry.original)
        request.owedSince = entry.owedSince > 0 ? entry.owedSince : nil
        return submit(.reverse(request, service: true), receivedAt: .now(), answerBy: nil)
    }

    private func submit(_ operation: Operation, receivedAt: NIODeadline, answerBy: NIODeadline?) -> EventLoopFuture<Decision> {
        let promise = eventLoop.makePromise(of: Decision.self)
        if eventLoop.inEventLoop {
            submit(operation, receivedAt, answerBy, promise)
        } else {
            eventLoop.execute { self.submit(operation, receivedAt, answerBy, promise) }
        }
        return promise.futureResult
    }

    /// SLA minus the recent processing time (the decline that records a
    /// `07 account busy` takes about that long) minus `answerSlack` (so the
    /// record is normally back before the answer is due), never below the floor.
    private var lockBudget: TimeAmount {
        let budget = config.sla.nanoseconds - Int64(state.value.averageProcessingNanos) - config.answerSlack.nanoseconds
        return .nanoseconds(max(budget, config.minLockBudget.nanoseconds))
    }

    private func submit(_ operation: Operation, _ receivedAt: NIODeadline, _ answerBy: NIODeadline?, _ promise: EventLoopPromise<Decision>) {
        state.value.tokenCounter &+= 1
        let job = Job(
            operation: operation,
            promise: promise,
            deadline: receivedAt + lockBudget,
            answerBy: answerBy,
            token: "\(tokenPrefix):\(state.value.tokenCounter)"
        )
        armAnswerDeadline(job)
        let account = job.account
        if state.value.queues[account] == nil {
            state.value.queues[account] = CircularBuffer(initialCapacity: 4)
            state.value.queues[account]!.append(job)
            attempt(job)
            return
        }
        guard state.value.queues[account]!.count < config.maxQueuedPerAccount else {
            decline(job, reason: .accountBusy)
            return
        }
        state.value.queues[account]!.append(job)
        job.waitStartedAt = .now()
        metrics.lockWaitStarted(.queued)
        armDeadline(job)
    }

    // MARK: - The head of an account's queue

    /// The lock is kept past a script only when something of this process
    /// follows on the account (its next request inherits the lock, so other
    /// processes wait on the keyevent meanwhile), for a WAIT on the replicas,
    /// and for reversals. Otherwise authorize.lua only checks it: taking and
    /// releasing inside one atomic execution could not be observed.
    private func keepsLock(_ job: Job) -> Bool {
        if job.isReversal || config.replicaAcks > 0 { return true }
        guard let queue = state.value.queues[job.account] else { return false }
        return queue.contains { $0 !== job && !$0.machine.isDone }
    }

    private func attempt(_ job: Job) {
        job.machine.attemptStarted()
        if let inherited = state.value.heldLocks.removeValue(forKey: job.account) {
            job.lockToken = inherited
            job.inheritedLock = true
        }
        job.keepsLock = keepsLock(job)
        let started = NIODeadline.now()
        let metric: ServerMetrics.RedisCall
        let call: ScriptCall
        switch job.operation {
        case .authorize(let request, let resolution):
            metric = .authorize
            call = .authorize(
                request, resolution, token: job.lockToken, lockTTLms: job.keepsLock ? lockTTLms : 0, idempotency: idempotencyScope(),
                statements: ledger.stream(forAccount: request.account),
                zoneOffsetSeconds: config.zoneOffsetSeconds(), receivedMicros: job.receivedMicros
            )
        case .reverse(let request, _):
            metric = .reverse
            call = .reverse(
                request, token: job.lockToken, lockTTLms: lockTTLms, idempotency: idempotencyScope(),
                windowMs: Int64(config.reversalWindowSeconds) * 1000, statements: ledger.stream(forAccount: request.account)
            )
        }
        guard config.replicaAcks > 0 else {
            redis.run(call, in: scripts).assumeIsolated().whenComplete { result in
                self.metrics.redisRoundTrip(metric, since: started)
                self.attemptFinished(job, result, replication: nil, started: started)
            }
            return
        }
        replicated(call, answerBy: job.answerBy, waitWhen: AuthorizeReply.isDecided).assumeIsolated().whenComplete { result in
            self.metrics.redisRoundTrip(metric, since: started)
            self.attemptFinished(job, result.map(\.reply), replication: try? result.get(), started: started)
        }
    }

    /// `--replica-acks N`: the script, then a WAIT for N replicas on the
    /// connection that carried it when `waitWhen` holds for its reply (one
    /// WAIT per event-loop tick covers the batch), bounded by the answer's deadline.
    private func replicated(
        _ call: ScriptCall, answerBy: NIODeadline?, waitWhen: @escaping @Sendable (RESPValue) -> Bool
    ) -> EventLoopFuture<ReplicatedReply> {
        let margin = config.answerMargin
        let ackTimeout = config.replicaAckTimeout
        return redis.run(call, in: scripts, replicas: config.replicaAcks) { reply in
            guard waitWhen(reply) else { return nil }
            let left = (answerBy ?? (NIODeadline.now() + ackTimeout)) - margin - NIODeadline.now()
            return Int(max(1, min(left.nanoseconds, ackTimeout.nanoseconds) / 1_000_000))
        }
    }

    /// The day buckets to name, from this process's clock (Redis's decides).
    private func idempotencyScope() -> IdempotencyScope {
        let now = Int64(time(nil))
        let today = UTCDay(unixSeconds: now)
        let readOlderKeys = now < config.olderRecordsReadUntil
        if let scope = state.value.idempotency, scope.today == today, scope.readOlderKeys == readOlderKeys { return scope }
        let scope = IdempotencyScope(
            today: today, reversalWindowSeconds: config.reversalWindowSeconds,
            retentionSeconds: config.idempotencyTTLSeconds, readOlderKeys: readOlderKeys
        )
        state.value.idempotency = scope
        return scope
    }

    /// `replication`: the WAIT that followed the script (nil without `--replica-acks`).
    private func attemptFinished(_ job: Job, _ result: Result<RESPValue, Error>, replication: ReplicatedReply?, started: NIODeadline) {
        guard !job.machine.isDone else { return }
        let reply: AuthorizeReply
        switch result {
        case .failure(let error):
            logger.warning("\(job.isReversal ? "reverse" : "authorize") failed", metadata: ["account": "\(job.account)", "id": "\(job.id)", "error": "\(error)"])
            if case .authorize = job.operation, !job.answered, (error as? RedisError)?.kind != .outOfMemory {
                // The script may have run, or may still run once Redis reads
                // it; and if it was never sent, the id may have been approved
                // by another process (a retry after a lost answer): owe its
                // reversal before the terminal hears the 07, so a 07 never
                // stands beside a debit. Not when Redis refused it at
                // maxmemory: the script looked for the id's decision first
                // (found none) and wrote nothing.
                oweReversal(job, answer: .rejected(.storageUnavailable))
            }
            // The script may have run and taken the lock; release it if the
            // link still works, the TTL covers the rest.
            finish(job, .rejected(.storageUnavailable), unlock: true)
            return
        case .success(let value):
            do {
                reply = try AuthorizeReply(value)
            } catch {
                logger.error("unexpected authorize reply", metadata: ["reply": "\(value)"])
                finish(job, .rejected(.internalError(nil)), unlock: true)
                return
            }
        }
        switch reply {
        case .unknownAccount:
            // Answered before the lock is looked at: an inherited one is still held.
            finish(job, .rejected(.unknownAccount), unlock: job.inheritedLock)
        case .decided(let decision):
            if !job.waited {
                let elapsed = Double((NIODeadline.now() - started).nanoseconds)
                state.value.averageProcessingNanos += (elapsed - state.value.averageProcessingNanos) * 0.05
            }
            guard config.replicaAcks > 0 else {
                // Without a ttl the script released the lock (if it held one).
                finish(job, decision, unlock: job.keepsLock)
                return
            }
            replicated(job, decision, replication: replication)
        case .locked(let pttl):
            if job.answered {
                // Answered `07 timeout` already: stop here (this attempt did nothing).
                finish(job, .rejected(.timeout), unlock: job.inheritedLock)
                return
            }
            job.waited = true
            if job.waitStartedAt == nil {
                job.waitStartedAt = .now()
                metrics.lockWaitStarted(.locked)
            }
            lockedByAnother(job, pttl: pttl)
        }
    }

    /// `--replica-acks N`: the answer waits for N replicas to hold the
    /// decision's writes. What too few replicas acknowledged in time could be
    /// lost in a failover, so it is not answered as done:
    /// - an approval is reversed like a timeout and answered `07 timeout`;
    /// - a terminal's reversal is answered `07 timeout` (the terminal repeats
    ///   it; the repeat gets its first decision once replicas hold it);
    /// - a reversal the service owes stays owed (journaled) and is tried again.
    /// A 51 or a 07 of an authorization is its id's record too: lost in a
    /// failover, a repeat of the id would be decided again (a 51 turning into
    /// a 00). So it is answered `07 timeout` with the id's reversal owed (the
    /// reversal leaves a tombstone where the record was lost).
    private func replicated(_ job: Job, _ decision: Decision, replication: ReplicatedReply?) {
        if isShort(replication), unacknowledged(job, decision, replication: replication) {
            finish(job, .rejected(.timeout), unlock: true)
        } else {
            finish(job, decision, unlock: true)
        }
    }

    /// Too few replicas acknowledged what `decision` rests on (the id's
    /// record, a credit), as `replicated` says. True when it is not to be
    /// answered as done: the job is answered `07 timeout` (an authorization
    /// with its reversal owed), or, a reversal the service owes, to be tried
    /// again. False for a refused terminal reversal: it leaves no record and
    /// is answered as decided.
    private func unacknowledged(_ job: Job, _ decision: Decision, replication: ReplicatedReply?) -> Bool {
        metrics.unreplicatedDecision()
        logger.warning("decision not acknowledged by enough replicas", metadata: [
            "account": "\(job.account)", "id": "\(job.id)", "replicas": "\(replication?.acknowledged ?? 0)",
            "wanted": "\(replication?.wanted ?? config.replicaAcks)",
        ])
        switch job.operation {
        case .reverse(_, service: true):
            return true
        case .reverse(_, service: false) where decision.code != .approved:
            return false
        case .authorize, .reverse(_, service: false):
            if !job.answered {
                metrics.timedOut()
                // A terminal's reversal is just answered; an authorization's is owed first.
                oweReversal(job, answer: .rejected(.timeout))
            }
            return true
        }
    }

    /// Under `--replica-acks N`: fewer replicas than the WAIT wanted (every
    /// replica listed for the node, at least N) hold the decision, or no
    /// WAIT was made.
    private func isShort(_ replication: ReplicatedReply?) -> Bool {
        guard config.replicaAcks > 0 else { return false }
        guard let replication, replication.acknowledged != nil else { return true }
        return replication.isShort
    }

    private func lockedByAnother(_ job: Job, pttl: Int64) {
        switch job.machine.locked(pastDeadline: NIODeadline.now() >= job.deadline, registered: job.ticket != nil) {
        case .declineBusy:
            decline(job, reason: .accountBusy)
        case .register:
            armDeadline(job)
            register(job, pttl: pttl)
        case .attemptAgain:
            armDeadline(job)
            attempt(job)
        case .wait:
            armDeadline(job)
            if pttl >= 0 {
                // Redis expires keys lazily: retry when the holder's TTL is over
                // rather than waiting for the `expired` event alone.
                scheduleRetry(job, after: .milliseconds(pttl + 1))
            }
        }
    }

    /// First LOCKED: register, then look at the lock once more, so an
    /// unlock that landed before the subscription was live is not missed.
    private func register(_ job: Job, pttl: Int64) {
        let boundJob = NIOLoopBound(job, eventLoop: eventLoop)
        watcher.register(
            lockKey: Keys.lock(job.account),
            // The master that just answered LOCKED owns the slot now.
            owner: redis.master(ofSlot: HashSlot.of(key: Keys.lock(job.account))),
            on: eventLoop
        ) {
            // Runs on this shard's event loop.
            self.woken(boundJob.value)
        }.assumeIsolated().whenComplete { result in
            switch result {
            case .success(let ticket):
                job.ticket = ticket
                switch job.machine.registrationSucceeded() {
                case .unregister: self.watcher.unregister(ticket)
                case .attempt: self.attempt(job)
                }
            case .failure(let error):
                // No notifications: fall back to the holder's TTL and the deadline.
                self.logger.warning("lock watch failed", metadata: ["error": "\(error)"])
                guard job.machine.registrationFailed() else { return }
                self.scheduleRetry(job, after: .milliseconds(max(1, min(pttl, 5))))
            }
        }
    }

    private func woken(_ job: Job) {
        guard job.machine.woken() == .attempt else { return }
        job.retryTask?.cancel()
        job.retryTask = nil
        attempt(job)
    }

    private func scheduleRetry(_ job: Job, after delay: TimeAmount) {
        job.retryTask?.cancel()
        guard NIODeadline.now() + delay < job.deadline else { return }
        job.retryTask = eventLoop.assumeIsolated().scheduleTask(in: delay) {
            job.retryTask = nil
            if job.machine.retryIsDue { self.attempt(job) }
        }
    }

    private func armDeadline(_ job: Job) {
        guard job.deadlineTask == nil else { return }
        job.deadlineTask = eventLoop.assumeIsolated().scheduleTask(deadline: job.deadline) {
            job.deadlineTask = nil
            if job.machine.lockDeadlinePassed() == .declineBusy { self.decline(job, reason: .accountBusy) }
        }
    }

    // MARK: - Endings

    /// A 07 decided here rather than by the script (the lock could not be
    /// had in time): decline.lua records it before the terminal hears it,
    /// unless the id was decided already; then its first decision is the
    /// answer. Until decline.lua replies the answer is not known: the SLA's
    /// deadlines treat the job as a script in flight.
    private func decline(_ job: Job, reason: RejectReason) {
        guard !job.machine.isDone else { return }
        let wasHead = state.value.queues[job.account]?.first === job
        job.machine.declineStarted()
        cancelTimers(job)
        if let waitStartedAt = job.waitStartedAt { metrics.lockWaitEnded(since: waitStartedAt, timedOut: true) }
        let decision = Decision.rejected(reason)
        job.declined = decision
        let call: ScriptCall
        let statements = ledger.stream(forAccount: job.account)
        let rewrite = config.replicaAcks > 0
        switch job.operation {
        case .authorize(let request, let resolution):
            call = .decline(
                request, resolution, reason: reason, idempotency: idempotencyScope(), rewrite: rewrite, statements: statements, receivedMicros: job.receivedMicros
            )
        case .reverse(_, service: true):
            // Nobody to tell and nothing to record: the service tries again later.
            job.machine.finished()
            answer(job, decision)
            if wasHead { advance(job.account) }
            return
        case .reverse(let request, service: false):
            call = .decline(request, reason: reason, idempotency: idempotencyScope(), rewrite: rewrite, statements: statements)
        }
        let sent = NIODeadline.now()
        let reply: EventLoopFuture<ReplicatedReply>
        if rewrite {
            reply = replicated(call, answerBy: job.answerBy, waitWhen: AuthorizeReply.isDecided)
        } else {
            reply = redis.run(call, in: scripts).map { ReplicatedReply(reply: $0, acknowledged: nil, wanted: 0) }
        }
        reply.assumeIsolated().whenComplete { result in
            self.metrics.redisRoundTrip(.decline, since: sent)
            job.machine.finished()
            self.declineFinished(job, result, declined: decision)
        }
        logger.warning("declined", metadata: ["account": "\(job.account)", "id": "\(job.id)", "reason": "\(reason)"])
        if wasHead { advance(job.account) }
    }

    /// decline.lua's reply: the recorded 07, or the id's first decision.
    /// An authorization whose outcome stays unknown (no reply) is answered
    /// with its reversal owed: the id may have been approved elsewhere.
    private func declineFinished(_ job: Job, _ result: Result<ReplicatedReply, Error>, declined: Decision) {
        guard !job.answered else { return }  // answered `07 timeout`, its reversal owed
        let replied: ReplicatedReply
        switch result {
        case .failure(let error):
            logger.warning("could not record declined transaction", metadata: ["id": "\(job.id)", "error": "\(error)"])
            oweReversal(job, answer: declined)
            return
        case .success(let value):
            replied = value
        }
        switch try? AuthorizeReply(replied.reply) {
        case .unknownAccount?:
            answer(job, .rejected(.unknownAccount))
        case .decided(let first)?:
            // Too few replicas hold the id's record (the 07 just recorded, or
            // its first decision): as in `replicated`, not answered as done.
            if isShort(replied), unacknowledged(job, first, replication: replied) {
                return
            }
            if first != declined {
                logger.info("declined id was decided before; answering its first decision", metadata: [
                    "account": "\(job.account)", "id": "\(job.id)", "code": "\(first.code.rawValue)",
                ])
            }
            answer(job, first)
        case .locked?, nil:
            logger.error("unexpected decline reply", metadata: ["reply": "\(replied.reply)"])
            oweReversal(job, answer: declined)
        }
    }

    /// Completes the job's promise once; later answers (a decision arriving
    /// after `07 timeout`) are dropped.
    private func answer(_ job: Job, _ decision: Decision) {
        guard !job.answered else { return }
        job.answered = true
        job.answerTask?.cancel()
        job.answerTask = nil
        job.promise.succeed(decision)
    }

    // MARK: - The SLA

    /// Every terminal request is answered by `answerBy`. Shortly before it
    /// (`answerMargin`: the journal's fsync needs a moment), a request whose
    /// script is in flight is answered `07 timeout`; half a millisecond before
    /// it whatever is still unanswered is.
    private func armAnswerDeadline(_ job: Job) {
        guard let answerBy = job.answerBy else { return }
        job.answerTask = eventLoop.assumeIsolated().scheduleTask(deadline: answerBy - config.answerMargin) {
            job.answerTask = nil
            guard !job.answered else { return }
            if job.machine.answerMarginReached() == .timeOut {
                self.timeOut(job)
                return
            }
            // The last moment: whatever is unanswered is answered now.
            job.answerTask = self.eventLoop.assumeIsolated().scheduleTask(deadline: answerBy - .microseconds(500)) {
                job.answerTask = nil
                guard !job.answered else { return }
                switch job.machine.lastMomentReached() {
                case .timeOut:
                    self.timeOut(job)
                case .answerDeclined:
                    // Declined; its ledger record is not back yet.
                    self.answer(job, job.declined ?? .rejected(.accountBusy))
                case .declineAndAnswer:
                    // No script of this job in flight, but its id may have
                    // been decided elsewhere: answered with its reversal owed.
                    self.decline(job, reason: .accountBusy)
                    self.oweReversal(job, answer: .rejected(.accountBusy))
                }
            }
        }
    }

    /// The script is in flight and may still run (or have run): answer
    /// `07 timeout` now. An authorization is first recorded as owed a
    /// reversal (fsynced), and the reversal is queued; the job stays at the
    /// head of its account's queue until its script's reply (or failure)
    /// comes back.
    private func timeOut(_ job: Job) {
        metrics.timedOut()
        logger.warning("declined", metadata: ["account": "\(job.account)", "id": "\(job.id)", "reason": "\(RejectReason.timeout)"])
        oweReversal(job, answer: .rejected(.timeout))
    }

    /// Answers `decision` (a 07) for a job whose script may still run. An
    /// authorization is reversed by the service: the reversal is journaled
    /// before the answer, then queued. The answer waits for the journal's
    /// fsync, but not past the SLA's last moment: then a written line is
    /// enough (it survives a crash of serve; only a host crash within the rest
    /// of the fsync could lose it, the durability Redis's `appendfsync
    /// everysec` gives the ledger itself). A reversal running late is harmless
    /// (the terminal repeats it), so it is just answered.
    private func oweReversal(_ job: Job, answer decision: Decision) {
        job.answered = true
        job.answerTask?.cancel()
        job.answerTask = nil
        guard case .authorize(let request, _) = job.operation else {
            job.promise.succeed(decision)
            return
        }
        let entry = PendingReversal(account: request.account, original: request.id, owedSince: WallClock.micros())
        logger.warning("reversal owed", metadata: ["account": "\(entry.account)", "id": "\(entry.original)", "reason": "\(decision.reason ?? "")"])
        guard let journal else {
            owe(entry)
            job.promise.succeed(decision)
            return
        }
        let appended = journal.append(entry, on: eventLoop)
        var owed = OwedAnswer()
        let perform: (OwedAnswer.Action) -> Void = { action in
            guard case .answer(let beforeSync) = action else { return }
            if beforeSync { self.metrics.answeredBeforeJournalSync() }
            self.owe(entry)
            job.promise.succeed(decision)
        }
        appended.written.assumeIsolated().whenSuccess { perform(owed.lineWritten()) }
        appended.durable.assumeIsolated().whenComplete { result in
            if case .failure(let error) = result {
                self.logger.error("reversal not journaled; it is owed in memory only", metadata: ["account": "\(entry.account)", "id": "\(entry.original)", "error": "\(error)"])
            }
            perform(owed.lineDurable())
        }
        if let answerBy = job.answerBy, !config.answerAfterJournalSync {
            eventLoop.assumeIsolated().scheduleTask(deadline: answerBy - .microseconds(500)) { perform(owed.lastMoment()) }
        }
    }

    /// `unlock`: the job may hold the account lock (under `lockToken`). Its
    /// next request inherits it, or it is released (see `advance`).
    private func finish(_ job: Job, _ decision: Decision, unlock: Bool) {
        assert(!job.machine.isDone)
        job.machine.finished()
        cancelTimers(job)
        if let waitStartedAt = job.waitStartedAt { metrics.lockWaitEnded(since: waitStartedAt, timedOut: false) }
        answer(job, decision)
        if unlock {
            state.value.heldLocks[job.account] = job.lockToken
        }
        if decision.code == .rejected && decision.rejectReason != .timeout {
            logger.warning("declined", metadata: ["account": "\(job.account)", "id": "\(job.id)", "reason": "\(decision.reason ?? "")"])
        }
        assert(state.value.queues[job.account]?.first === job, "only the head of a queue talks to redis")
        advance(job.account)
    }

    private func cancelTimers(_ job: Job) {
        job.deadlineTask?.cancel()
        job.deadlineTask = nil
        job.retryTask?.cancel()
        job.retryTask = nil
        if let ticket = job.ticket {
            watcher.unregister(ticket)
            job.ticket = nil
        }
    }

    /// Drops the finished head (and any queued jobs that already timed out)
    /// and starts the next one.
    private func advance(_ account: String) {
        guard var queue = state.value.queues.removeValue(forKey: account) else {
            releaseHeldLock(account)
            return
        }
        _ = queue.popFirst()
        while let head = queue.first, head.machine.isDone { _ = queue.popFirst() }
        guard let next = queue.first else {
            releaseHeldLock(account)
            return
        }
        state.value.queues[account] = queue
        attempt(next)
    }

    /// Nothing of this process follows on `account`: release the lock it
    /// holds there, if any. Not awaited: a later request's script follows on
    /// the same connection, so Redis runs it after this unlock. The reply is
    /// still read so a NOSCRIPT (script cache flushed) reloads and resends.
    private func releaseHeldLock(_ account: String) {
        guard let token = state.value.heldLocks.removeValue(forKey: account) else { return }
        redis.run(.unlock(account: account, token: token), in: scripts).whenFailure { error in
            self.logger.debug("unlock failed; the lock TTL will release it", metadata: ["account": "\(account)", "error": "\(error)"])
        }
    }

    /// Accounts with at least one request waiting (queued behind another, or
    /// for a lock held elsewhere), and those requests. For the metrics sampler.
    func contention() -> EventLoopFuture<(accounts: Int, waiters: Int)> {
        eventLoop.submit {
            var accounts = 0
            var waiters = 0
            for queue in self.state.value.queues.values {
                var waiting = 0
                for (index, job) in queue.enumerated() where !job.machine.isDone {
                    if index > 0 || job.waited { waiting += 1 }
                }
                if waiting > 0 {
                    accounts += 1
                    waiters += waiting
                }
            }
            return (accounts, waiters)
        }
    }
}

/// What a job asks of Redis: both run under the account lock.
enum Operation {
    case authorize(TransactionRequest, Resolution)
    /// `service`: a reversal the service owes after a `07 timeout`, not a terminal's.
    case reverse(ReversalRequest, service: Bool)
}

/// One request inside a shard. Confined to the shard's event loop.
private final class Job {

    let operation: Operation
    let account: String
    let id: String
    let promise: EventLoopPromise<Decision>
    let deadline: NIODeadline
    /// When the terminal must have its answer; nil for the service's own reversals.
    let answerBy: NIODeadline?
    let token: String
    /// When it was received (wall clock, µs): an approval it is answered is
    /// recorded as heard then (see `PendingReversal.owedSince`).
    let receivedMicros = WallClock.micros()
    /// The token this request locks with: its own, or the one of the lock
    /// it inherited from the previous request of this process for the account.
    var lockToken: String
    var inheritedLock = false
    /// Its script keeps the lock past its execution (see `keepsLock`).
    var keepsLock = true
    /// The promise is completed (or about to be, once the journal is written).
    var answered = false
    var answerTask: Scheduled<Void>?
    /// The 07 given by `decline`, answered when its record is back or at `answerBy`.
    var declined: Decision?
    /// The phase, and what each event asks of the gate.
    var machine = JobStateMachine()
    var waited = false
    /// When the request started waiting for its account (queued or LOCKED), if it did.
    var waitStartedAt: NIODeadline?
    var ticket: WaiterRegistry.Ticket?
    var deadlineTask: Scheduled<Void>?
    var retryTask: Scheduled<Void>?

    var isReversal: Bool {
        if case .reverse = operation { return true }
        return false
    }

    init(operation: Operation, promise: EventLoopPromise<Decision>, deadline: NIODeadline, answerBy: NIODeadline?, token: String) {
        self.operation = operation
        switch operation {
        case .authorize(let request, _):
            account = request.account
            id = request.id
        case .reverse(let request, _):
            account = request.account
            id = request.id
        }
        self.promise = promise
        self.deadline = deadline
        self.answerBy = answerBy
        self.token = token
        self.lockToken = token
    }
}
