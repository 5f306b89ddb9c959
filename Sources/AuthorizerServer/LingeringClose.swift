import NIOCore

/// Closing a socket with unread input sends RST, and the peer's kernel then
/// drops the answers it has not read yet. So after the last answer of a
/// graceful shutdown a connection sends FIN, then reads and drops the
/// peer's input until the peer closes, bounded by `limit`. Used by both
/// fronts (terminal lines and ISO 8583 links).
enum LingeringClose {
    static let limit = TimeAmount.seconds(2)

    /// Output closed now; the channel closes when the peer does, or at `limit`.
    /// The handler drops whatever it reads from now on and keeps reading.
    static func start(context: ChannelHandlerContext) {
        let closed = context.eventLoop.makePromise(of: Void.self)
        closed.futureResult.assumeIsolated().whenFailure { _ in context.close(promise: nil) }  // no half-close (TLS): close
        context.close(mode: .output, promise: closed)
        context.eventLoop.assumeIsolated().scheduleTask(in: limit) { context.close(promise: nil) }
        context.read()
    }
}
