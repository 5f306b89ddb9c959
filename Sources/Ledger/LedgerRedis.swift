import Logging
import NIOCore
import NIOPosix
import RedisWire

/// Where the ledger pipeline sends the commands of one stream: the master of
/// the stream's slot (`SlotRedis`, which follows MOVED through the `Redis`;
/// one Redis is the master of every slot), or one node (node-local commands).
public protocol LedgerRedis: Sendable {
    @discardableResult
    func send(_ arguments: [String]) async throws -> RESPValue
    /// Every command at once, replies in order; fails with the first error.
    func pipeline(_ commands: [[String]]) async throws -> [RESPValue]
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
