import AuthorizerCore
import Logging
import NIOCore
import RedisWire

/// The accounts owned by one event loop: their local FIFO gates, their lock
/// waits, and the Redis connection their scripts run on.
///
/// Every request for an account goes to the same shard, so inside one
/// process only the head of an account's queue talks to Redis, and its
/// unlock and the next head's authorize travel in order on one connection.
final class AccountShard: Sendable {
    let eventLoop: EventLoop
    let redis: RedisClient
    private let scripts: ScriptLibrary
    private let watcher: LockWatcher
    private let config: AuthorizerConfig
    private let logger: Logger
    private let metrics: ServerMetrics
    private let tokenPrefix: String
    private let lockTTLArgument: String
    private let idempotencyTTLArgument: String
    private let state: NIOLoopBoundBox<State>

    private struct State {
        var queues: [String: CircularBuffer<Job>] = [:]
        /// Recent time from script call to decision, uncontended (EWMA, ns).
        var averageProcessingNanos: Double = 1_000_000
        var tokenCounter: UInt64 = 0
    }

    init(eventLoop: EventLoop, redis: RedisClient, scripts: ScriptLibrary, watcher: LockWatcher, config: AuthorizerConfig, tokenPrefix: String, logger: Logger, metrics: ServerMetrics = .disabled) {
        self.eventLoop = eventLoop
        self.metrics = metrics
        self.redis = redis
        self.scripts = scripts
        self.watcher = watcher
        self.config = config
        self.tokenPrefix = tokenPrefix
        self.lockTTLArgument = String(config.lockTTL.nanoseconds / 1_000_000)
        self.idempotencyTTLArgument = String(config.idempotencyTTLSeconds)
        self.logger = logger
        self.state = NIOLoopBoundBox.makeBoxSendingValue(State(), eventLoop: eventLoop)
    }

    /// One authorization; completes on this shard's event loop.
    func authorize(_ request: TransactionRequest, _ resolution: Resolution, receivedAt: NIODeadline) -> EventLoopFuture<Decision> {
        let promise = eventLoop.makePromise(of: Decision.self)
        if eventLoop.inEventLoop {
            submit(request, resolution, receivedAt, promise)
        } else {
            eventLoop.execute { self.submit(request, resolution, receivedAt, promise) }
        }
        return promise.futureResult
    }

    /// SLA minus the recent processing time, never below the floor.
    private var lockBudget: TimeAmount {
        let budget = config.sla.nanoseconds - Int64(state.value.averageProcessingNanos)
        return .nanoseconds(max(budget, config.minLockBudget.nanoseconds))
    }

    private func submit(_ request: TransactionRequest, _ resolution: Resolution, _ receivedAt: NIODeadline, _ promise: EventLoopPromise<Decision>) {
        state.value.tokenCounter &+= 1
        let job = Job(
            request: request,
            resolution: resolution,
            promise: promise,
            deadline: receivedAt + lockBudget,
            token: "\(tokenPrefix):\(state.value.tokenCounter)"
        )
        let account = request.account
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

    private func attempt(_ job: Job) {
        job.phase = .attempting
        job.wokenDuringAttempt = false
        let started = NIODeadline.now()
        let request = job.request
        let resolution = job.resolution
        redis.evalScript(
            scripts.authorize,
            keys: [
                Keys.account(request.account),
                Keys.lock(request.account),
                Keys.transaction(account: request.account, id: request.id),
                Keys.statements,
            ],
            arguments: [
                job.token,
                lockTTLArgument,
                request.id,
                request.account,
                String(request.amount.value),
                request.mcc,
                resolution.mccUsed,
                request.merchant,
                resolution.category,
                resolution.fallbackCategory,
                resolution.fallbackMode.rawValue,
                idempotencyTTLArgument,
            ]
        ).assumeIsolated().whenComplete { result in
            self.metrics.redisRoundTrip(.authorize, since: started)
            self.attemptFinished(job, result, started: started)
        }
    }

    private func attemptFinished(_ job: Job, _ result: Result<RESPValue, Error>, started: NIODeadline) {
        guard job.phase != .done else { return }
        let reply: AuthorizeReply
        switch result {
        case .failure(let error):
            logger.warning("authorize failed", metadata: ["account": "\(job.request.account)", "id": "\(job.request.id)", "error": "\(error)"])
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
            finish(job, .rejected(.unknownAccount), unlock: false)
        case .decided(let decision):
            if !job.waited {
                let elapsed = Double((NIODeadline.now() - started).nanoseconds)
                state.value.averageProcessingNanos += (elapsed - state.value.averageProcessingNanos) * 0.05
            }
            finish(job, decision, unlock: true)
        case .locked(let pttl):
            job.waited = true
            if job.waitStartedAt == nil {
                job.waitStartedAt = .now()
                metrics.lockWaitStarted(.locked)
            }
            lockedByAnother(job, pttl: pttl)
        }
    }

    private func lockedByAnother(_ job: Job, pttl: Int64) {
        if NIODeadline.now() >= job.deadline {
            decline(job, reason: .accountBusy)
            return
        }
        armDeadline(job)
        guard job.ticket != nil else {
            // First LOCKED: register, then look at the lock once more, so an
            // unlock that landed before the subscription was live is not missed.
            job.phase = .registering
            let boundJob = NIOLoopBound(job, eventLoop: eventLoop)
            watcher.register(lockKey: Keys.lock(job.request.account), on: eventLoop) {
                // Runs on this shard's event loop.
                self.woken(boundJob.value)
            }.assumeIsolated().whenComplete { result in
                switch result {
                case .success(let ticket):
                    job.ticket = ticket
                    if job.phase == .done {
                        self.watcher.unregister(ticket)
                    } else {
                        self.attempt(job)
                    }
                case .failure(let error):
                    // No notifications: fall back to the holder's TTL and the deadline.
                    self.logger.warning("lock watch failed", metadata: ["error": "\(error)"])
                    guard job.phase != .done else { return }
                    job.phase = .waiting
                    self.scheduleRetry(job, after: .milliseconds(max(1, min(pttl, 5))))
                }
            }
            return
        }
        if job.wokenDuringAttempt {
            attempt(job)
            return
        }
        job.phase = .waiting
        if pttl >= 0 {
            // Redis expires keys lazily: retry when the holder's TTL is over
            // rather than waiting for the `expired` event alone.
            scheduleRetry(job, after: .milliseconds(pttl + 1))
        }
    }

    private func woken(_ job: Job) {
        switch job.phase {
        case .waiting:
            job.retryTask?.cancel()
            job.retryTask = nil
            attempt(job)
        case .attempting, .registering:
            job.wokenDuringAttempt = true
        case .queued, .done:
            break
        }
    }

    private func scheduleRetry(_ job: Job, after delay: TimeAmount) {
        job.retryTask?.cancel()
        guard NIODeadline.now() + delay < job.deadline else { return }
        job.retryTask = eventLoop.assumeIsolated().scheduleTask(in: delay) {
            job.retryTask = nil
            if job.phase == .waiting { self.attempt(job) }
        }
    }

    private func armDeadline(_ job: Job) {
        guard job.deadlineTask == nil else { return }
        job.deadlineTask = eventLoop.assumeIsolated().scheduleTask(deadline: job.deadline) {
            job.deadlineTask = nil
            switch job.phase {
            case .queued, .waiting:
                self.decline(job, reason: .accountBusy)
            case .attempting, .registering:
                // The script in flight decides; a LOCKED answer is declined then.
                break
            case .done:
                break
            }
        }
    }

    // MARK: - Endings

    /// A 07 decided here rather than by the script: recorded in the
    /// statements stream before the terminal hears it.
    private func decline(_ job: Job, reason: RejectReason) {
        guard job.phase != .done else { return }
        let wasHead = state.value.queues[job.request.account]?.first === job
        job.phase = .done
        cancelTimers(job)
        if let waitStartedAt = job.waitStartedAt { metrics.lockWaitEnded(since: waitStartedAt, timedOut: true) }
        let request = job.request
        let sent = NIODeadline.now()
        redis.evalScript(
            scripts.decline,
            keys: [Keys.account(request.account), Keys.statements],
            arguments: [request.id, request.account, String(request.amount.value), request.mcc, job.resolution.mccUsed, request.merchant, job.resolution.category, reason.text]
        ).assumeIsolated().whenComplete { result in
            self.metrics.redisRoundTrip(.decline, since: sent)
            if case .failure(let error) = result {
                self.logger.warning("could not record declined transaction", metadata: ["id": "\(request.id)", "error": "\(error)"])
            }
            job.promise.succeed(.rejected(reason))
        }
        logger.warning("declined", metadata: ["account": "\(request.account)", "id": "\(request.id)", "reason": "\(reason)"])
        if wasHead { advance(request.account) }
    }

    private func finish(_ job: Job, _ decision: Decision, unlock: Bool) {
        assert(job.phase != .done)
        job.phase = .done
        cancelTimers(job)
        if let waitStartedAt = job.waitStartedAt { metrics.lockWaitEnded(since: waitStartedAt, timedOut: false) }
        job.promise.succeed(decision)
        if unlock {
            // Not awaited: the next request's authorize follows on the same
            // connection, so Redis runs it after this unlock. The reply is
            // still read so a NOSCRIPT (script cache flushed) reloads and resends.
            let account = job.request.account
            redis.evalScript(scripts.unlock, keys: [Keys.lock(account)], arguments: [job.token]).whenFailure { error in
                self.logger.debug("unlock failed; the lock TTL will release it", metadata: ["account": "\(account)", "error": "\(error)"])
            }
        }
        if decision.code == .rejected {
            logger.warning("declined", metadata: ["account": "\(job.request.account)", "id": "\(job.request.id)", "reason": "\(decision.reason ?? "")"])
        }
        assert(state.value.queues[job.request.account]?.first === job, "only the head of a queue talks to redis")
        advance(job.request.account)
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
        guard var queue = state.value.queues.removeValue(forKey: account) else { return }
        _ = queue.popFirst()
        while let head = queue.first, head.phase == .done { _ = queue.popFirst() }
        guard let next = queue.first else { return }
        state.value.queues[account] = queue
        attempt(next)
    }

    /// Accounts with at least one request waiting (queued behind another, or
    /// for a lock held elsewhere), and those requests. For the metrics sampler.
    func contention() -> EventLoopFuture<(accounts: Int, waiters: Int)> {
        eventLoop.submit {
            var accounts = 0
            var waiters = 0
            for queue in self.state.value.queues.values {
                var waiting = 0
                for (index, job) in queue.enumerated() where job.phase != .done {
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

/// One request inside a shard. Confined to the shard's event loop.
private final class Job {
    enum Phase { case queued, attempting, registering, waiting, done }

    let request: TransactionRequest
    let resolution: Resolution
    let promise: EventLoopPromise<Decision>
    let deadline: NIODeadline
    let token: String
    var phase: Phase = .queued
    var waited = false
    /// When the request started waiting for its account (queued or LOCKED), if it did.
    var waitStartedAt: NIODeadline?
    var wokenDuringAttempt = false
    var ticket: WaiterRegistry.Ticket?
    var deadlineTask: Scheduled<Void>?
    var retryTask: Scheduled<Void>?

    init(request: TransactionRequest, resolution: Resolution, promise: EventLoopPromise<Decision>, deadline: NIODeadline, token: String) {
        self.request = request
        self.resolution = resolution
        self.promise = promise
        self.deadline = deadline
        self.token = token
    }
}

/// The reply of authorize.lua.
enum AuthorizeReply {
    case unknownAccount
    case locked(pttl: Int64)
    case decided(Decision)

    init(_ value: RESPValue) throws {
        guard let items = value.array, let kind = items.first?.string else {
            throw RedisError.unexpectedReply("\(value)")
        }
        switch kind {
        case "UNKNOWN":
            self = .unknownAccount
        case "LOCKED":
            guard items.count == 2, let pttl = items[1].int else { throw RedisError.unexpectedReply("\(value)") }
            self = .locked(pttl: pttl)
        case "DONE":
            guard items.count >= 3, let code = items[1].string.flatMap(ResponseCode.init(rawValue:)) else {
                throw RedisError.unexpectedReply("\(value)")
            }
            let detail = items[2].string ?? ""
            self = .decided(code == .rejected ? .rejected(RejectReason(text: detail)) : Decision(code: code))
        default:
            throw RedisError.unexpectedReply("\(value)")
        }
    }
}
