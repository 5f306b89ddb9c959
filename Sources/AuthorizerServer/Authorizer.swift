import AuthorizerCore
import Logging
import NIOCore
import RedisWire

/// The authorization flow: rules resolved in Swift, the decision taken by
/// authorize.lua on the shard that owns the account.
public final class Authorizer: Sendable {
    public let rules: RulesCache
    public let watcher: LockWatcher
    private let shards: [AccountShard]
    public let config: AuthorizerConfig
    public let metrics: ServerMetrics

    /// One shard (and one pipelined Redis connection) per event loop.
    public init(
        group: EventLoopGroup,
        endpoint: RedisEndpoint,
        scripts: ScriptLibrary,
        rules: RulesCache,
        watcher: LockWatcher,
        config: AuthorizerConfig,
        redisOptions: RedisConnection.Options,
        logger: Logger,
        metrics: ServerMetrics = .disabled
    ) {
        let nonce = String(UInt64.random(in: .min ... .max), radix: 36)
        var shards: [AccountShard] = []
        for (index, loop) in group.makeIterator().enumerated() {
            let redis = RedisClient(
                endpoint: endpoint, eventLoop: loop, scripts: scripts.all, options: redisOptions, logger: logger,
                onReconnect: { metrics.redisReconnected(.command) },
                onScriptsReloaded: { metrics.scriptsReloaded() }
            )
            shards.append(AccountShard(
                eventLoop: loop, redis: redis, scripts: scripts, watcher: watcher, config: config,
                tokenPrefix: "\(nonce):\(index)", logger: logger, metrics: metrics
            ))
        }
        precondition(!shards.isEmpty)
        self.shards = shards
        self.rules = rules
        self.watcher = watcher
        self.config = config
        self.metrics = metrics
    }

    /// Opens every shard's Redis connection and loads the scripts there.
    public func connect() -> EventLoopFuture<Void> {
        let loop = shards[0].eventLoop
        return EventLoopFuture.andAllSucceed(shards.map { $0.redis.connect() }, on: loop)
    }

    /// Authorizes a validated request. The future completes on the owning
    /// shard's event loop; hop before touching a channel.
    public func authorize(_ request: TransactionRequest, receivedAt: NIODeadline) -> EventLoopFuture<Decision> {
        let resolution = rules.rules.resolve(mcc: request.mcc, merchant: MerchantDescriptor(request.merchant))
        return shard(for: request.account).authorize(request, resolution, receivedAt: receivedAt)
    }

    private func shard(for account: String) -> AccountShard {
        // FNV-1a: stable, cheap, and independent of Swift's per-process hash seed.
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in account.utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
        }
        return shards[Int(hash % UInt64(shards.count))]
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
