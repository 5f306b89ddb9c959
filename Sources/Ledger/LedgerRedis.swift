import Logging
import NIOCore
import NIOPosix
import RedisWire

/// Where the ledger pipeline sends the commands of one stream: the one Redis
/// (`RedisLink`), or on a cluster the master of the stream's slot
/// (`SlotRedis`, which follows MOVED through the router).
public protocol LedgerRedis: Sendable {
    @discardableResult
    func send(_ arguments: [String]) async throws -> RESPValue
    /// Every command at once, replies in order; fails with the first error.
    func pipeline(_ commands: [[String]]) async throws -> [RESPValue]
}

/// One connection to one Redis, for one consumer (an XREADGROUP BLOCK holds
/// its connection, so each consumer has its own). Runs on the shared event
/// loop group: a blocked read holds a connection, never a thread.
public final class RedisLink: LedgerRedis {
    public let endpoint: RedisEndpoint
    private let client: RedisClient

    /// `commandTimeout` must exceed the longest BLOCK this connection issues.
    public init(endpoint: RedisEndpoint, commandTimeout: TimeAmount = .seconds(5), logger: Logger) {
        self.endpoint = endpoint
        self.client = RedisClient(
            endpoint: endpoint,
            eventLoop: MultiThreadedEventLoopGroup.singleton.next(),
            options: RedisConnection.Options(commandTimeout: commandTimeout, connectTimeout: .seconds(2)),
            logger: logger
        )
    }

    @discardableResult
    public func send(_ arguments: [String]) async throws -> RESPValue {
        try await client.send(RedisCommand(arguments)).get()
    }

    public func pipeline(_ commands: [[String]]) async throws -> [RESPValue] {
        let futures = commands.map { client.send(RedisCommand($0)) }
        var replies: [RESPValue] = []
        replies.reserveCapacity(futures.count)
        for future in futures { replies.append(try await future.get()) }
        return replies
    }

    public func close() {
        client.close()
    }
}

/// The master of one slot, through a `Redis`. A MOVED reply updates
/// the router's slot map and the command is resent to the new owner.
public struct SlotRedis: LedgerRedis {
    public let router: Redis
    public let slot: Int

    public init(router: Redis, slot: Int) {
        self.router = router
        self.slot = slot
    }

    public init(router: Redis, key: String) {
        self.init(router: router, slot: HashSlot.of(key: key))
    }

    @discardableResult
    public func send(_ arguments: [String]) async throws -> RESPValue {
        try await router.send(RedisCommand(arguments), slot: slot).get()
    }

    public func pipeline(_ commands: [[String]]) async throws -> [RESPValue] {
        let futures = commands.map { router.send(RedisCommand($0), slot: slot) }
        var replies: [RESPValue] = []
        for future in futures { replies.append(try await future.get()) }
        return replies
    }
}
