import NIOCore
import NIOPosix

/// One TCP connection to Redis with pipelined commands.
public final class RedisConnection: Sendable {
    public let channel: Channel
    public var eventLoop: EventLoop { channel.eventLoop }
    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }
    public var isActive: Bool { channel.isActive }

    init(channel: Channel) {
        self.channel = channel
    }

    public struct Options: Sendable {
        /// A reply older than this closes the connection and fails every caller.
        public var commandTimeout: TimeAmount
        public var connectTimeout: TimeAmount
        /// Bound on commands waiting for their reply.
        public var maxPending: Int

        public init(commandTimeout: TimeAmount = .seconds(2), connectTimeout: TimeAmount = .milliseconds(500), maxPending: Int = 65_536) {
            self.commandTimeout = commandTimeout
            self.connectTimeout = connectTimeout
            self.maxPending = maxPending
        }
    }

    /// Connects, authenticates and selects the database.
    public static func connect(
        to endpoint: RedisEndpoint,
        on eventLoop: EventLoop,
        options: Options = Options(),
        onPush: (@Sendable (RESPValue) -> Void)? = nil
    ) -> EventLoopFuture<RedisConnection> {
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(options.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(RESPReplyDecoder()))
                    try channel.pipeline.syncOperations.addHandler(
                        RedisCommandHandler(timeout: options.commandTimeout, maxPending: options.maxPending, onPush: onPush)
                    )
                }
            }
        return bootstrap.connect(host: endpoint.host, port: endpoint.port).flatMap { channel in
            let connection = RedisConnection(channel: channel)
            return connection.handshake(endpoint).map { connection }.flatMapErrorThrowing { error in
                connection.close()
                throw error
            }
        }
    }

    private func handshake(_ endpoint: RedisEndpoint) -> EventLoopFuture<Void> {
        var steps: [RedisCommand] = []
        if let password = endpoint.password {
            steps.append(endpoint.username.map { RedisCommand("AUTH", $0, password) } ?? RedisCommand("AUTH", password))
        }
        if endpoint.database != 0 {
            steps.append(RedisCommand("SELECT", String(endpoint.database)))
        }
        let futures = steps.map { send($0) }
        return EventLoopFuture.andAllSucceed(futures, on: eventLoop)
    }

    /// Sends a command; the reply completes the future. Safe from any thread.
    public func send(_ command: RedisCommand) -> EventLoopFuture<RESPValue> {
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        channel.write(RedisRequest(command: command, promise: promise), promise: nil)
        return promise.futureResult
    }

    public func close() {
        channel.close(promise: nil)
    }
}
