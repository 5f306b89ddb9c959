import AuthorizerCore
import NIOCore
import NIOExtras
import NIOPosix

/// One terminal connection for single requests, each answer timestamped when
/// it arrives (for measurements that pace themselves, like the unlock probe).
public final class LineClient: Sendable {
    private let channel: Channel

    private init(channel: Channel) {
        self.channel = channel
    }

    public static func connect(to target: HostPort, on loop: EventLoop) -> EventLoopFuture<LineClient> {
        ClientBootstrap(group: loop)
            .connectTimeout(.seconds(5))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineBasedFrameDecoder(), maximumBufferSize: LineClientHandler.maxLineLength))
                    try channel.pipeline.syncOperations.addHandler(LineClientHandler())
                }
            }
            .connect(host: target.host, port: target.port)
            .map { LineClient(channel: $0) }
            .flatMapErrorThrowing { throw LoadGeneratorError.cannotConnect(target, $0) }
    }

    /// Sends one line; the future has the answer line and when it arrived.
    public func request(_ line: String) -> EventLoopFuture<(line: String, at: NIODeadline)> {
        let promise = channel.eventLoop.makePromise(of: (line: String, at: NIODeadline).self)
        channel.writeAndFlush(LineClientHandler.Request(line: line, promise: promise), promise: nil)
        return promise.futureResult
    }

    public func close() {
        channel.close(promise: nil)
    }
}

final class LineClientHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Request
    typealias OutboundOut = ByteBuffer

    struct Request: Sendable {
        let line: String
        let promise: EventLoopPromise<(line: String, at: NIODeadline)>
    }

    private var waiting = CircularBuffer<EventLoopPromise<(line: String, at: NIODeadline)>>()
    /// The longest answer line read; a longer one ends the connection.
    static let maxLineLength = 64 * 1024

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        waiting.append(request.promise)
        context.write(wrapOutboundOut(context.channel.allocator.buffer(string: request.line + "\n")), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // One answer line (LineBasedFrameDecoder: without its \n or \r\n).
        let line = String(buffer: unwrapInboundIn(data))
        waiting.popFirst()?.succeed((line, NIODeadline.now()))
    }

    func channelInactive(context: ChannelHandlerContext) {
        while let promise = waiting.popFirst() { promise.fail(ChannelError.eof) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
