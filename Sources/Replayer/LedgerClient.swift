import AuthorizerCore
import Foundation
import Ledger
import Logging
import NIOCore
import NIOPosix
import RedisWire

/// The ledger as its readers (the replayer, the notifier, the audit) see it,
/// on one Redis or a cluster alike: the streams a node holds
/// (`LedgerLayout`), each stream's commands sent to the master of its slot
/// (a MOVED updates the slot map and resends), node-local commands on one
/// node. One Redis is a node holding every slot.
public final class LedgerClient: Sendable {
    public let redis: Redis
    /// Where the streams are (`statements`, or one per slot).
    public let layout: LedgerLayout

    /// A `Redis` on one event loop of the shared group. Nothing is connected
    /// yet: the first command connects, and a consumer retries until it does.
    public init(target: RedisTarget, commandTimeout: TimeAmount = .seconds(5), logger: Logger) {
        self.redis = Redis(
            target: target, eventLoop: MultiThreadedEventLoopGroup.singleton.next(),
            options: RedisConnection.Options(commandTimeout: commandTimeout, connectTimeout: .seconds(2)), logger: logger
        )
        self.layout = target.ledger
    }

    public var eventLoop: EventLoop { redis.eventLoop }

    /// Commands about `key`'s slot go to its master.
    public func redis(forKey key: String) -> SlotRedis {
        SlotRedis(router: redis, key: key)
    }

    /// The masters as the map knows them now, after re-reading it.
    public func masters(refresh: Bool = true) async throws -> [ClusterTopology.Node] {
        if refresh { try await redis.eventLoop.flatSubmit { self.redis.refresh() }.get() }
        return try await redis.topology.get().masters
    }

    /// A command on one node (node-local commands: SCAN, INFO).
    public func send(_ arguments: [String], on node: ClusterTopology.Node) async throws -> RESPValue {
        try await redis.eventLoop.flatSubmit { self.redis.client(for: node).send(RedisCommand(arguments)) }.get()
    }

    /// `commands` pipelined on one node: written together, replies in order.
    public func pipeline(_ commands: [[String]], on node: ClusterTopology.Node) async throws -> [RESPValue] {
        let replies = redis.eventLoop.flatSubmit {
            let client = self.redis.client(for: node)
            return EventLoopFuture.whenAllSucceed(commands.map { client.send(RedisCommand($0)) }, on: self.redis.eventLoop)
        }
        return try await replies.get()
    }

    /// The endpoint of a node, with the target's user and password.
    public func endpoint(of node: ClusterTopology.Node) -> RedisEndpoint {
        redis.target.primary.at(node)
    }

    /// The ledger streams a master holds: the one stream of one Redis, or
    /// the slot streams found there (SCAN is node-local).
    public func streams(on node: ClusterTopology.Node) async throws -> [String] {
        guard layout == .streamPerSlot else { return [Keys.statements] }
        var cursor = "0"
        var streams: [String] = []
        repeat {
            let reply = try await send(["SCAN", cursor, "MATCH", "statements:*", "COUNT", "1000", "TYPE", "stream"], on: node)
            guard let parts = reply.array, parts.count == 2, let next = parts[0].string else {
                throw RedisError.unexpectedReply("SCAN: \(reply)")
            }
            streams += (parts[1].array ?? []).compactMap(\.string).filter(layout.isLedgerStream)
            cursor = next
        } while cursor != "0"
        return streams
    }

    /// The accounts with balances on every master.
    public func accounts() async throws -> [String] {
        var accounts: [String] = []
        for node in try await masters() {
            accounts += try await Auditor.scanAccounts(on: NodeRedis(ledger: self, node: node))
        }
        return accounts
    }

    /// One command per key, each to the master of its key's slot, all in
    /// flight at once; replies in order. Fails with the first error.
    public func pipeline(_ commands: [(key: String, arguments: [String])]) async throws -> [RESPValue] {
        try await pipelineResults(commands).map { try $0.get() }
    }

    /// Same, keeping each command's error instead of failing.
    func pipelineResults(_ commands: [(key: String, arguments: [String])]) async -> [Result<RESPValue, Error>] {
        let futures = commands.map { redis.send(RedisCommand($0.arguments), slot: HashSlot.of(key: $0.key)) }
        var results: [Result<RESPValue, Error>] = []
        results.reserveCapacity(futures.count)
        for future in futures {
            do {
                results.append(.success(try await future.get()))
            } catch {
                results.append(.failure(error))
            }
        }
        return results
    }

    public func close() {
        redis.close()
    }
}

/// One node, for node-local commands.
struct NodeRedis: LedgerRedis {
    let ledger: LedgerClient
    let node: ClusterTopology.Node

    func send(_ arguments: [String]) async throws -> RESPValue { try await ledger.send(arguments, on: node) }
    func pipeline(_ commands: [[String]]) async throws -> [RESPValue] { try await ledger.pipeline(commands, on: node) }
}
