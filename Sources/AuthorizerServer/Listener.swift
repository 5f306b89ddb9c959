import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOExtras
import NIOPosix
import NIOSSL

/// A bounded TCP listener, the one of both fronts (`Listener.terminals`,
/// `Listener.iso8583`): a connection limit (more are refused and counted),
/// a write buffer limit, an optional idle timeout and TLS, graceful
/// quiescing; the protocol handlers come from the front.
public struct Listener: Sendable {
    public struct Limits: Sendable {
        public var host = "127.0.0.1"
        public var port: Int
        /// Connections open at once; more are refused.
        public var maxConnections = 20_000
        /// Requests of one connection in flight at once; frames read past it
        /// wait, and the connection is not read until they are taken up.
        public var maxInFlightPerConnection = 1_024
        /// Answers buffered for a peer that does not read them; past this the connection is closed.
        public var maxWriteBufferBytes = 1 << 20
        /// A connection that sends nothing for this long is closed (nil: never).
        public var idleTimeout: TimeAmount? = .seconds(300)
        /// The port speaks TLS when set (optionally with client certificates).
        public var tls: NIOSSLContext?

        public init(port: Int) {
            self.port = port
        }
    }

    let channel: Channel
    let quiesce: ServerQuiescingHelper

    public var localPort: Int? { channel.localAddress?.port }

    /// `connectionsName`: what a connection is called in the refusal's log
    /// line ("terminal connections", "ISO 8583 links").
    static func start(
        group: EventLoopGroup, limits: Limits, connectionsName: String, metrics: ServerMetrics, logger: Logger,
        protocolHandlers: @escaping @Sendable (Channel) throws -> Void
    ) -> EventLoopFuture<Listener> {
        precondition(limits.maxConnections > 0 && limits.maxWriteBufferBytes > 0 && limits.maxInFlightPerConnection > 0)
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
                value: .init(low: limits.maxWriteBufferBytes / 2, high: limits.maxWriteBufferBytes)
            )
            .childChannelInitializer { channel in
                let admitted = open.withLockedValue { count -> Bool in
                    guard count < limits.maxConnections else { return false }
                    count += 1
                    return true
                }
                guard admitted else {
                    metrics.connectionRefused()
                    logger.warning("connection refused: too many \(connectionsName)", metadata: ["max": "\(limits.maxConnections)"])
                    return channel.close()
                }
                metrics.connectionOpened()
                channel.closeFuture.whenComplete { _ in
                    open.withLockedValue { $0 -= 1 }
                    metrics.connectionClosed()
                }
                return channel.eventLoop.makeCompletedFuture {
                    if let tls = limits.tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                    }
                    if let idleTimeout = limits.idleTimeout {
                        try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: idleTimeout))
                    }
                    try protocolHandlers(channel)
                }
            }
        return bootstrap.bind(host: limits.host, port: limits.port).map { Listener(channel: $0, quiesce: quiesce) }
    }

    /// Stops accepting, lets every connection answer what it accepted, and
    /// completes when all of them are closed.
    public func shutdown() -> EventLoopFuture<Void> {
        let promise = channel.eventLoop.makePromise(of: Void.self)
        quiesce.initiateShutdown(promise: promise)
        return promise.futureResult
    }
}
