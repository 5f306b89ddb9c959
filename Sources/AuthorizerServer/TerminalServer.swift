import AuthorizerCore
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
        /// One constant, not an option: the parser and the `07` reason text state it too.
        public var maxLineLength: Int { TransactionRequestParser.maxLineLength }
        /// Answers buffered for a terminal that does not read them; past this the connection is closed.
        public var maxWriteBufferBytes = 1 << 20
        /// A connection that sends nothing for this long is closed (nil: never).
        public var idleTimeout: TimeAmount? = .seconds(300)
        /// Terminals speak TLS when set (optionally with client certificates).
        public var tls: NIOSSLContext?
        public init() {}
    }

    private let listener: Listener

    public var localPort: Int? { listener.localPort }

    private init(listener: Listener) {
        self.listener = listener
    }

    public static func start(group: EventLoopGroup, authorizer: Authorizer, options: Options, logger: Logger) -> EventLoopFuture<TerminalServer> {
        let limits = Listener.Limits(
            host: options.host, port: options.port, maxConnections: options.maxConnections,
            maxWriteBufferBytes: options.maxWriteBufferBytes, idleTimeout: options.idleTimeout, tls: options.tls,
            connectionsName: "terminal connections"
        )
        return Listener.start(group: group, limits: limits, metrics: authorizer.metrics, logger: logger) { channel in
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineFramer(maxLength: options.maxLineLength)))
            try channel.pipeline.syncOperations.addHandler(
                TerminalHandler(authorizer: authorizer, maxInFlight: options.maxInFlightPerConnection, logger: logger)
            )
        }.map { TerminalServer(listener: $0) }
    }

    /// Stops accepting, lets every connection answer what it accepted, and
    /// completes when all of them are closed.
    public func shutdown() -> EventLoopFuture<Void> {
        listener.shutdown()
    }
}
