import AuthorizerCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOExtras
import NIOPosix
import NIOSSL

extension Listener {
    /// The terminal port: line-delimited JSON, answers in request order.
    /// Lines are bounded by one constant (`TransactionRequestParser.maxLineLength`),
    /// which the parser and the `07` reason text state too.
    public static func terminals(group: EventLoopGroup, authorizer: Authorizer, limits: Limits, logger: Logger) -> EventLoopFuture<Listener> {
        start(group: group, limits: limits, connectionsName: "terminal connections", metrics: authorizer.metrics, logger: logger) { channel in
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineFramer(maxLength: TransactionRequestParser.maxLineLength)))
            try channel.pipeline.syncOperations.addHandler(
                TerminalHandler(authorizer: authorizer, maxInFlight: limits.maxInFlightPerConnection, logger: logger)
            )
        }
    }
}
