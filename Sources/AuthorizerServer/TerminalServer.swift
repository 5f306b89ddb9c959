import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOExtras
import NIOPosix
import NIOSSL

/// The TCP listener for terminals.
public final class TerminalServer: Sendable {
    public struct Options: Sendable {
        public var host = "127.0.0.1"
        public var port = 7070
        public var maxConnections = 20_000
        public var maxInFlightPerConnection = 1_024
        public var maxLineLength = 16 * 1024
        /// Answers buffered for a terminal that does not read them; past this the connection is closed.
        public var maxWriteBufferBytes = 1 << 20
        /// A connection that sends nothing for this long is closed (nil: never).
        public var idleTimeout: TimeAmount? = .seconds(300)
        /// Terminals speak TLS when set (optionally with client certificates).
        public var tls: NIOSSLContext?
        public init() {}
    }

    private let channel: Channel
    private let quiesce: ServerQuiescingHelper

    public var localPort: Int? { channel.localAddress?.port }

    private init(channel: Channel, quiesce: ServerQuiescingHelper) {
        self.channel = channel
        self.quiesce = quiesce
    }

    public static func start(group: EventLoopGroup, authorizer: Authorizer, options: Options, logger: Logger) -> EventLoopFuture<TerminalServer> {
        let quiesce = ServerQuiescingHelper(group: group)
        let open = NIOLockedValueBox(0)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiesce.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(
                .writeBufferWaterMark,
                value: .init(low: options.maxWriteBufferBytes / 2, high: options.maxWriteBufferBytes)
            )
            .childChannelInitializer { channel in
                let admitted = open.withLockedValue { count -> Bool in
                    guard count < options.maxConnections else { return false }
                    count += 1
                    return true
                }
                guard admitted else {
                    authorizer.metrics.connectionRefused()
                    logger.warning("connection refused: too many terminal connections", metadata: ["max": "\(options.maxConnections)"])
                    return channel.close()
                }
                authorizer.metrics.connectionOpened()
                channel.closeFuture.whenComplete { _ in
                    open.withLockedValue { $0 -= 1 }
                    authorizer.metrics.connectionClosed()
                }
                return channel.eventLoop.makeCompletedFuture {
                    if let tls = options.tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                    }
                    if let idleTimeout = options.idleTimeout {
                        try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: idleTimeout))
                    }
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineFramer(maxLength: options.maxLineLength)))
                    try channel.pipeline.syncOperations.addHandler(
                        TerminalHandler(authorizer: authorizer, maxInFlight: options.maxInFlightPerConnection, logger: logger)
                    )
                }
            }
        return bootstrap.bind(host: options.host, port: options.port).map { channel in
            TerminalServer(channel: channel, quiesce: quiesce)
        }
    }

    /// Stops accepting, lets every connection answer what it accepted, and
    /// completes when all terminal connections are closed.
    public func shutdown() -> EventLoopFuture<Void> {
        let promise = channel.eventLoop.makePromise(of: Void.self)
        quiesce.initiateShutdown(promise: promise)
        return promise.futureResult
    }
}
