import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// A minimal HTTP/1.1 endpoint: `GET /metrics` answers the Prometheus text
/// exposition, anything else a 404 (405 for another method on /metrics).
///
/// Bounded: a few connections at once, small request heads, request bodies
/// refused, idle connections closed.
public final class MetricsServer: Sendable {
    public struct Options: Sendable {
        public var host = "127.0.0.1"
        public var port = 9464
        public var maxConnections = 16
        public var idleTimeout = TimeAmount.seconds(30)
        public init() {}
    }

    private let channel: Channel

    public var localPort: Int? { channel.localAddress?.port }

    private init(channel: Channel) {
        self.channel = channel
    }

    public static func start(group: EventLoopGroup, metrics: ServerMetrics, options: Options, logger: Logger) -> EventLoopFuture<MetricsServer> {
        start(group: group, exposition: { metrics.exposition() }, options: options, logger: logger)
    }

    /// Serves what `exposition` renders (the Prometheus text of a registry).
    public static func start(
        group: EventLoopGroup, exposition: @escaping @Sendable () -> [UInt8], options: Options, logger: Logger
    ) -> EventLoopFuture<MetricsServer> {
        let open = NIOLockedValueBox(0)
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldSize = 8 * 1024
        limits.maxHeaderListSize = 16 * 1024
        limits.maxHeaderFieldCount = 64
        let decoderLimits = limits
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                let admitted = open.withLockedValue { count -> Bool in
                    guard count < options.maxConnections else { return false }
                    count += 1
                    return true
                }
                guard admitted else {
                    logger.debug("metrics connection refused: too many connections")
                    return channel.close()
                }
                channel.closeFuture.whenComplete { _ in open.withLockedValue { $0 -= 1 } }
                return channel.pipeline.configureHTTPServerPipeline(
                    withErrorHandling: true,
                    withOutboundHeaderValidation: true,
                    withEncoderConfiguration: .init(),
                    withDecoderLimitConfiguration: decoderLimits
                ).flatMapThrowing {
                    try channel.pipeline.syncOperations.addHandler(IdleStateHandler(allTimeout: options.idleTimeout))
                    try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler(exposition: exposition))
                }
            }
        return bootstrap.bind(host: options.host, port: options.port).map { MetricsServer(channel: $0) }
    }

    public func close() -> EventLoopFuture<Void> {
        channel.close()
    }
}

/// Answers one request at a time (the pipeline handler before it holds the next).
final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    static let path = "/metrics"
    static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    private let exposition: @Sendable () -> [UInt8]
    private var head: HTTPRequestHead?
    private var hasBody = false
    private var bodyBytes = 0
    static let maxBodyBytes = 64 * 1024

    init(exposition: @escaping @Sendable () -> [UInt8]) {
        self.exposition = exposition
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            hasBody = false
            bodyBytes = 0
        case .body(let chunk):
            hasBody = true
            bodyBytes += chunk.readableBytes
            if bodyBytes > Self.maxBodyBytes { context.close(promise: nil) }
        case .end:
            guard let head else { return }
            self.head = nil
            respond(to: head, context: context)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? head.uri
        // A body is never expected; one was read and dropped, so close after answering.
        let keepAlive = head.isKeepAlive && !hasBody
        switch (path, head.method) {
        case (Self.path, .GET), (Self.path, .HEAD):
            send(.ok, contentType: Self.contentType, body: exposition(), head: head, keepAlive: keepAlive, context: context)
        case (Self.path, _):
            send(.methodNotAllowed, body: Array("only GET and HEAD\n".utf8), extraHeaders: [("Allow", "GET, HEAD")], head: head, keepAlive: keepAlive, context: context)
        default:
            send(.notFound, body: Array("not found; metrics are at \(Self.path)\n".utf8), head: head, keepAlive: keepAlive, context: context)
        }
    }

    private func send(
        _ status: HTTPResponseStatus,
        contentType: String = "text/plain; charset=utf-8",
        body: [UInt8],
        extraHeaders: [(String, String)] = [],
        head request: HTTPRequestHead,
        keepAlive: Bool,
        context: ChannelHandlerContext
    ) {
        var headers = HTTPHeaders([("Content-Type", contentType), ("Content-Length", String(body.count))] + extraHeaders)
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method != .HEAD {
            var buffer = context.channel.allocator.buffer(capacity: body.count)
            buffer.writeBytes(body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            written.whenComplete { _ in loopBound.value.close(promise: nil) }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
