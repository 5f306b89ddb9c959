import Logging
import NIOCore
import NIOPosix
import RedisWire

/// A Redis connection for a plain thread: every call waits for its reply.
/// Never used from an event loop. Owns its event loop group so a blocking
/// XREADGROUP on it delays nobody else.
public final class BlockingRedis: Sendable {
    public let endpoint: RedisEndpoint
    private let group: MultiThreadedEventLoopGroup
    private let client: RedisClient

    /// `commandTimeout` must exceed the longest BLOCK this connection issues.
    public init(endpoint: RedisEndpoint, commandTimeout: TimeAmount = .seconds(5), logger: Logger) {
        self.endpoint = endpoint
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.client = RedisClient(
            endpoint: endpoint,
            eventLoop: group.next(),
            options: RedisConnection.Options(commandTimeout: commandTimeout, connectTimeout: .seconds(2)),
            logger: logger
        )
    }

    @discardableResult
    public func send(_ arguments: [String]) throws -> RESPValue {
        try client.send(RedisCommand(arguments)).wait()
    }

    /// Sends every command at once (one pipeline) and waits for all replies,
    /// in order. Fails with the first error.
    public func pipeline(_ commands: [[String]]) throws -> [RESPValue] {
        let futures = commands.map { client.send(RedisCommand($0)) }
        return try futures.map { try $0.wait() }
    }

    public func close() {
        client.close()
        try? group.syncShutdownGracefully()
    }
}
