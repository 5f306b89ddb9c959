import AuthorizerCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import RedisWire

/// The authorization flow: rules resolved in Swift, the decision taken by
/// authorize.lua on the shard that owns the account.
public final class Authorizer: Sendable {
    public let rules: RulesCache
    public let watcher: LockWatcher
    private let shards: [AccountGate]
    public let config: AuthorizerConfig
    public let metrics: ServerMetrics
    /// The reversals this service owes (nil: kept in memory only, for tools and tests).
    public let journal: ReversalJournal?
    /// Resolves the card a request names into its account and card id.
    public let cards: CardDirectory
    private let logger: Logger
    /// Set once the shards exist: applies an owed reversal until Redis acknowledges it.
    private let applier = NIOLockedValueBox<(@Sendable (PendingReversal) -> Void)?>(nil)

    /// One shard (and one pipelined Redis connection) per event loop.
    public init(
        group: EventLoopGroup,
        target: RedisTarget,
        scripts: ScriptLibrary,
        rules: RulesCache,
        watcher: LockWatcher,
        config: AuthorizerConfig,
        redisOptions: RedisConnection.Options,
        logger: Logger,
        metrics: ServerMetrics = .disabled,
        journal: ReversalJournal? = nil,
        cards: CardDirectory = CardDirectory(keys: nil)
    ) {
        let applier = self.applier
        let owe: @Sendable (PendingReversal) -> Void = { entry in
            applier.withLockedValue { $0 }?(entry)
        }
        let nonce = String(UInt64.random(in: .min ... .max), radix: 36)
        var shards: [AccountGate] = []
        for (index, loop) in group.makeIterator().enumerated() {
            // One per event loop: its own slot map and one pipelined client per master.
            let redis = Redis(
                target: target, eventLoop: loop, scripts: scripts.all, options: redisOptions,
                tryAgainBudget: config.sla, logger: logger,
                onReconnect: { metrics.redisReconnected(.command) },
                onScriptsReloaded: { metrics.scriptsReloaded() },
                onRedirect: { kind in metrics.clusterRedirect(kind.rawValue) }
            )
            shards.append(AccountGate(
                eventLoop: loop, redis: redis, scripts: scripts, watcher: watcher, config: config,
                tokenPrefix: "\(nonce):\(index)", logger: logger, metrics: metrics,
                journal: journal, owe: owe
            ))
        }
        precondition(!shards.isEmpty)
        self.shards = shards
        self.rules = rules
        self.watcher = watcher
        self.config = config
        self.metrics = metrics
        self.journal = journal
        self.cards = cards
        self.logger = logger
        applier.withLockedValue { [unowned self] in
            $0 = { entry in self.apply(entry, attempt: 0) }
        }
    }

    /// Starts applying the reversals a previous run left in the journal.
    public func applyOwedReversals() {
        guard let journal else { return }
        let owed = journal.owed
        guard !owed.isEmpty else { return }
        logger.warning("applying reversals owed from a previous run", metadata: ["count": "\(owed.count)", "journal": "\(journal.path)"])
        for entry in owed { apply(entry, attempt: 0) }
    }

    /// Runs an owed reversal on its account's shard, under the account lock,
    /// retrying (with back-off) until Redis acknowledges it.
    private func apply(_ entry: PendingReversal, attempt: Int) {
        let shard = shard(for: entry.account)
        shard.reverseOwed(entry).whenSuccess { decision in
            let retry: Bool
            switch decision.rejectReason {
            case .accountBusy?, .storageUnavailable?, .timeout?, .internalError?:
                retry = true
            default:
                retry = false
            }
            if retry {
                let delay = Backoff.owedReversal.delay(afterFailures: attempt + 1)
                if attempt == 0 || attempt % 20 == 0 {
                    self.logger.warning("owed reversal not applied yet; retrying", metadata: [
                        "account": "\(entry.account)", "id": "\(entry.original)", "reason": "\(decision.reason ?? "")", "attempt": "\(attempt + 1)",
                    ])
                }
                shard.eventLoop.scheduleTask(in: delay) { self.apply(entry, attempt: attempt + 1) }
                return
            }
            if decision.code == .rejected {
                self.logger.error("owed reversal refused by redis; nothing more to do", metadata: [
                    "account": "\(entry.account)", "id": "\(entry.original)", "reason": "\(decision.reason ?? "")",
                ])
            } else {
                self.logger.info("owed reversal applied", metadata: ["account": "\(entry.account)", "id": "\(entry.original)"])
            }
            self.metrics.reversalApplied()
            self.journal?.acknowledge(entry)
            if let journal = self.journal, journal.count == 0 {
                self.logger.info("no reversals owed")
            }
        }
    }

    /// Opens every shard's Redis connection and loads the scripts there.
    public func connect() -> EventLoopFuture<Void> {
        let loop = shards[0].eventLoop
        return EventLoopFuture.andAllSucceed(shards.map { $0.redis.connect() }, on: loop)
    }

    /// Authorizes a validated request. The future completes on the owning
    /// shard's event loop; hop before touching a channel.
    public func authorize(_ request: TransactionRequest, receivedAt: NIODeadline) -> EventLoopFuture<Decision> {
        let shard = shard(for: request.account)
        switch journal?.admission(of: PendingReversal(account: request.account, original: request.id)) ?? .admit {
        case .admit:
            break
        case .full:
            // A timeout now could not be made good: refuse rather than risk it.
            logger.error("reversal journal full; refusing authorizations", metadata: ["owed": "\(journal?.count ?? 0)", "max": "\(journal?.maxEntries ?? 0)"])
            return shard.eventLoop.makeSucceededFuture(.rejected(.storageUnavailable))
        case .reversing:
            // This service is reversing the id (an earlier attempt timed out).
            return shard.eventLoop.makeSucceededFuture(.rejected(.reversed))
        }
        let resolution = rules.rules.resolve(mcc: request.mcc, merchant: request.descriptor)
        return shard.authorize(request, resolution, receivedAt: receivedAt)
    }

    /// Any terminal request: authorization, reversal or balance inquiry. A
    /// request that names a card is first resolved to its account and card id.
    public func handle(_ request: TerminalRequest, receivedAt: NIODeadline) -> EventLoopFuture<Decision> {
        guard let card = request.card else {
            guard let fallback = request.accountIfNoCard else { return route(request, receivedAt: receivedAt) }
            // ISO 8583, DE2 not a PAN.
            guard config.isoPANAsAccount else { return shards[0].eventLoop.makeSucceededFuture(.rejected(.card(.unknown))) }
            return route(request.resolved(account: fallback, cardID: nil), receivedAt: receivedAt)
        }
        let resolver = shard(for: request.id)
        return cards.resolve(card, on: resolver.redis).flatMap { outcome in
            switch outcome {
            case .card(let account, let cardID):
                guard request.account.isEmpty || request.account == account else {
                    return resolver.eventLoop.makeSucceededFuture(.rejected(.card(.otherAccount)))
                }
                return self.route(request.resolved(account: account, cardID: cardID), receivedAt: receivedAt)
            case .none:
                if let fallback = request.accountIfNoCard, self.config.isoPANAsAccount {
                    return self.route(request.resolved(account: fallback, cardID: nil), receivedAt: receivedAt)
                }
                return resolver.eventLoop.makeSucceededFuture(.rejected(.card(.unknown)))
            }
        }.flatMapErrorThrowing { error in
            self.logger.warning("card not resolved", metadata: ["card": "\(card.shown)", "id": "\(request.id)", "error": "\(error)"])
            return .rejected(.storageUnavailable)
        }
    }

    private func route(_ request: TerminalRequest, receivedAt: NIODeadline) -> EventLoopFuture<Decision> {
        assert(!request.account.isEmpty, "a request reaches its shard with its account")
        switch request {
        case .authorization(let authorization):
            return authorize(authorization, receivedAt: receivedAt)
        case .reversal(let reversal):
            return shard(for: reversal.account).reverse(reversal, receivedAt: receivedAt)
        case .balance(let inquiry):
            return shard(for: inquiry.account).balance(inquiry, receivedAt: receivedAt)
        }
    }

    private func shard(for account: String) -> AccountGate {
        // Stable across processes and restarts, unlike Swift's seeded hash.
        shards[Int(FNV1a.hash64(account.utf8) % UInt64(shards.count))]
    }

    /// Accounts with requests waiting for them, and those requests, over all shards.
    public func contention() -> EventLoopFuture<(accounts: Int, waiters: Int)> {
        let loop = shards[0].eventLoop
        return EventLoopFuture.whenAllSucceed(shards.map { $0.contention() }, on: loop).map { counts in
            counts.reduce((accounts: 0, waiters: 0)) { ($0.accounts + $1.accounts, $0.waiters + $1.waiters) }
        }
    }

    /// After the terminals are gone: lets Redis answer every command sent
    /// (the last unlocks among them), then closes the connections.
    public func shutdown() -> EventLoopFuture<Void> {
        let loop = shards[0].eventLoop
        return EventLoopFuture.andAllComplete(shards.map { $0.redis.shutdown() }, on: loop)
    }
}
